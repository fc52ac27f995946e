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
    key = paths.keys_dir() / "id_ed25519"
    if key.exists():
        return key
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise AqError("ssh-keygen was not found", hint="install OpenSSH's client tools")
    from filelock import FileLock

    paths.make_private_dir(key.parent)
    with FileLock(str(key.with_name("keygen.lock"))):
        if key.exists():
            return key
        tmp = key.with_name(f".{key.name}.tmp")
        for stale in (tmp, tmp.with_name(tmp.name + ".pub")):
            stale.unlink(missing_ok=True)
        subprocess.run(
            [keygen, "-q", "-t", "ed25519", "-N", "", "-C", "aq", "-f", str(tmp)],
            check=True,
            capture_output=True,
        )
        # The public half first: the private key's presence means both are complete.
        tmp.with_name(tmp.name + ".pub").replace(key.with_name(key.name + ".pub"))
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
    keys = [aq_key().with_name("id_ed25519.pub").read_text().strip()]
    user = user_public_key()
    if user and user not in keys:
        keys.append(user)
    return "\n".join(keys)
