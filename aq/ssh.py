"""`aq ssh`: the system's ssh client, aimed at a VM's forwarded SSH port.

Host keys are checked, not ignored: aq reads the guest's host key over the command
channel (no network involved, so it cannot be spoofed), records it for that VM, and
runs ssh with strict checking against that record. aq's own key (made once per aq
home) is put in root's authorized_keys over the same channel before connecting.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from aq import sshkeys
from aq.errors import AqError
from aq.guest import channel
from aq.paths import VmFiles, public_key, write_private
from aq.safetext import for_terminal

HOST_KEY = re.compile(r"(ssh|ecdsa|sk)-[A-Za-z0-9@.-]+")
KEY_DATA = re.compile(r"[A-Za-z0-9+/]+={0,3}")
HOST_KEY_FILES = (
    "/etc/ssh/ssh_host_ed25519_key.pub",
    "/etc/ssh/ssh_host_ecdsa_key.pub",
    "/etc/ssh/ssh_host_rsa_key.pub",
)


def alias(name: str) -> str:
    """The name under which a VM's host key is recorded (ports may change; names do not)."""
    return f"aq-{name}"


def known_hosts_line(name: str, host_key: str) -> str:
    kind, key = host_key.split()[:2]
    return f"{alias(name)} {kind} {key}\n"


def command(
    name: str, port: int, key: Path, known_hosts: Path, remote: Sequence[str] = ()
) -> list[str]:
    """The ssh command line: strict host-key checking against the VM's own record."""
    argv = [
        shutil.which("ssh") or "ssh",
        "-i",
        str(key),
        "-p",
        str(port),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"HostKeyAlias={alias(name)}",
        "-o",
        "LogLevel=ERROR",
        "root@127.0.0.1",
    ]
    if remote:
        argv += ["--", *remote]
    return argv


def read_host_key(files: VmFiles) -> str:
    """The guest's SSH host public key, read over the command channel."""
    script = (
        "for f in " + " ".join(HOST_KEY_FILES) + '; do [ -r "$f" ] && exec cat "$f"; done; exit 3'
    )
    status, out, _ = channel.capture(files, ["sh", "-c", script], timeout=60)
    if status != 0 or not out.strip():
        raise AqError(
            "the VM has no SSH host key (is sshd installed and started?)",
            hint="install it in the guest: aq exec NAME -- sh -c 'apk add openssh && "
            "rc-update add sshd && rc-service sshd start'",
        )
    line = out.decode(errors="replace").strip().splitlines()[0]
    words = line.split()
    if len(words) < 2 or not HOST_KEY.fullmatch(words[0]) or not KEY_DATA.fullmatch(words[1]):
        raise AqError(
            f"the VM's SSH host key is malformed: {for_terminal(line[:200], one_line=True)}",
            hint="check the guest's /etc/ssh/ssh_host_*_key.pub",
        )
    return line


def authorize(files: VmFiles, public_key: str) -> None:
    """Make sure root in the guest accepts `public_key`."""
    script = (
        "mkdir -p /root/.ssh && chmod 700 /root/.ssh && touch /root/.ssh/authorized_keys && "
        'grep -qxF "$1" /root/.ssh/authorized_keys || echo "$1" >> /root/.ssh/authorized_keys'
    )
    status, _, err = channel.capture(files, ["sh", "-c", script, "sh", public_key], timeout=60)
    if status != 0:
        reason = for_terminal(err[:4096].strip(), one_line=True)
        raise AqError(f"could not authorize aq's key in the VM: {reason}")


def prepare(files: VmFiles, name: str, recorded: str | None) -> tuple[Path, str]:
    """aq's key authorized and the host key recorded; return the key and the host key."""
    key = sshkeys.aq_key()
    authorize(files, public_key(key).read_text().strip())
    host_key = recorded or read_host_key(files)
    write_private(files.known_hosts, known_hosts_line(name, host_key))
    return key, host_key
