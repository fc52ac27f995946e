"""SSH keys: aq's own key pair (made once per aq home) and the user's public key."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from aq import paths
from aq.errors import AqError

USER_KEYS = ("id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub")


def aq_key() -> Path:
    """aq's private key, generated with ssh-keygen the first time it is needed."""
    key = paths.aq_key()
    if key.exists():
        return key
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise AqError("ssh-keygen was not found", hint="install OpenSSH's client tools")
    from filelock import FileLock

    paths.make_private_dir(key.parent)
    with FileLock(str(paths.keygen_lock())):
        if key.exists():
            return key
        tmp = paths.keygen_tmp()
        for stale in (tmp, paths.public_key(tmp)):
            stale.unlink(missing_ok=True)
        subprocess.run(
            [keygen, "-q", "-t", "ed25519", "-N", "", "-C", "aq", "-f", str(tmp)],
            check=True,
            capture_output=True,
        )
        # The public half first: the private key's presence means both are complete.
        paths.public_key(tmp).replace(paths.public_key(key))
        tmp.replace(key)
    return key


def user_public_key() -> str | None:
    """The user's own public key (~/.ssh), so plain `ssh -p PORT root@127.0.0.1` works."""
    for name in USER_KEYS:
        path = Path.home() / ".ssh" / name
        if path.is_file():
            return path.read_text().strip()
    return None


def authorized_keys() -> str:
    """The keys the base install gives root: aq's own, and the user's when there is one."""
    keys = [paths.public_key(aq_key()).read_text().strip()]
    user = user_public_key()
    if user and user not in keys:
        keys.append(user)
    return "\n".join(keys)
