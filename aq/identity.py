"""A resumed guest's clock, and a clone's own identity, set through the command channel.

A clone of a live snapshot wakes up as its source: same hostname, same MAC inside the
guest (virtio-net's MAC travels in the migration stream), same DHCP lease, SSH host
keys, machine-id and RNG state. Before it is called ready, the agent gives it its own:
hostname, the MAC aq recorded for it, a fresh DHCP lease, new SSH host keys (made on
the host and recorded as `aq ssh` does), a new machine-id, fresh entropy with the
kernel's RNG reseeded from it at once (aq.reseed; on x86-64, QEMU's vmgenid device
does it too), and the clock set to now.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from aq import paths
from aq.errors import AqError, GuestTimeout
from aq.guest import channel
from aq.safetext import for_terminal
from aq.store.models import Vm

CLOCK = 'date -u -s "@$1" >/dev/null'

# $1 now (seconds), $2 hostname, $3 MAC, $4 host entropy (hex), $5 the new SSH host
# public key, $6 aq.reseed's program as a printf format; stdin: the host key's private
# half (made on the host: the guest's RNG is its source's until it reseeds). Prints
# "reseed STATUS", the program's exit status (0: reseeded; else the errno, or the
# shell's 126/127 when it could not run it).
IDENTITY = r"""
set -u
date -u -s "@$1" >/dev/null
echo "$4" >/dev/urandom
r=$(mktemp /tmp/aq-reseed.XXXXXX 2>/dev/null || mktemp /run/aq-reseed.XXXXXX) &&
	printf "$6" >"$r" && chmod 700 "$r" && "$r"
echo "reseed $?"
rm -f "$r"
old=$(hostname)
echo "$2" >/etc/hostname && hostname "$2"
if [ -f /etc/hosts ] && [ "$old" != localhost ] && [ "$old" != "$2" ]; then
	sed -i -e "s/[[:space:]]$old\$/ $2/" -e "s/[[:space:]]$old[[:space:]]/ $2 /g" /etc/hosts
fi
tr -d - </proc/sys/kernel/random/uuid >/etc/machine-id
if [ -d /var/lib/dbus ]; then cp /etc/machine-id /var/lib/dbus/machine-id; fi
mkdir -p /etc/ssh && chmod 755 /etc/ssh
rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub
(umask 077 && cat >/etc/ssh/ssh_host_ed25519_key)
echo "$5" >/etc/ssh/ssh_host_ed25519_key.pub
if command -v ssh-keygen >/dev/null; then ssh-keygen -A >/dev/null; fi
rc-service sshd --ifstarted restart >/dev/null 2>&1
dev=$(ls /sys/class/net | grep -v '^lo$' | head -n 1)
[ -n "$dev" ] || exit 0
# The DHCP client that runs is asked for a lease for the new MAC (dhcpcd: rebind;
# busybox udhcpc: restarted); else ifdown/ifup, seconds slower under TCG.
lease=/var/run/udhcpc.$dev.pid
if command -v dhcpcd >/dev/null && pidof dhcpcd >/dev/null; then
	up="dhcpcd -n $dev"
elif [ -s "$lease" ] && command -v udhcpc >/dev/null; then
	kill "$(cat "$lease")" 2>/dev/null
	up="udhcpc -b -R -i $dev -p $lease"
else
	ifdown "$dev" >/dev/null 2>&1
	up="ifup $dev"
fi
ip link set "$dev" down
ip link set "$dev" address "$3" || exit 4
ip link set "$dev" up
$up </dev/null >/dev/null 2>&1 || true
"""


def wait_agent(files: paths.VmFiles, deadline: float) -> None:
    """Until the guest's command channel answers (it does soon after `cont`)."""
    while not channel.ping(files, timeout=min(3.0, max(deadline - time.monotonic(), 0.1))):
        if time.monotonic() > deadline:
            raise GuestTimeout("the resumed guest's command channel did not answer", hint="")
        time.sleep(0.05)


def _run(files: paths.VmFiles, argv: list[str], stdin: bytes | None, what: str) -> bytes:
    """Run `argv` in the guest; its stdout (bounded), or AqError when it failed."""
    status, out, err = channel.capture(files, argv, stdin=stdin, timeout=120)
    if status != 0:
        reason = for_terminal(err[:2048].decode(errors="replace").strip(), one_line=True)
        raise AqError(f"could not {what} in the guest (status {status}): {reason}")
    return out


def set_clock(files: paths.VmFiles) -> None:
    """The guest's clock to the host's now (it stood still while suspended): with the
    agent's `T` line, or, for an agent older than that, an exec."""
    if channel.set_clock(files, int(time.time()), timeout=3.0):
        return
    _run(files, ["sh", "-c", CLOCK, "sh", str(int(time.time()))], None, "set the clock")


def reset(files: paths.VmFiles, vm: Vm) -> str:
    """Give a freshly resumed clone its own identity; record its new SSH host key.
    Says, for the history, whether the guest's RNG was reseeded."""
    from aq import reseed, ssh
    from aq.vm import record_host_key

    private, public = _host_key(vm.name)
    program = reseed.printf_format(reseed.program(vm.arch))
    args = [str(int(time.time())), vm.name, vm.mac, os.urandom(64).hex(), public, program]
    out = _run(files, ["sh", "-c", IDENTITY, "sh", *args], private, "reset the identity")
    record_host_key(vm.name, public)
    paths.write_private(files.known_hosts, ssh.known_hosts_line(vm.name, public))
    return reseed_outcome(out)


def reseed_outcome(out: bytes) -> str:
    """What the identity script's "reseed STATUS" line says (the guest's word, so
    only a number is taken from it)."""
    found = re.search(rb"^reseed (\d{1,3})$", out, re.MULTILINE)
    if found is None:
        return "RNG reseed not reported"
    status = int(found.group(1))
    return "RNG reseeded" if status == 0 else f"RNG not reseeded (status {status})"


def _host_key(name: str) -> tuple[bytes, str]:
    """A new ed25519 host key pair, made with the host's ssh-keygen."""
    import shutil
    import subprocess
    import tempfile

    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise AqError("ssh-keygen was not found", hint="install OpenSSH's client tools")
    with tempfile.TemporaryDirectory() as folder:
        key = Path(folder) / "key"
        subprocess.run(
            [keygen, "-q", "-t", "ed25519", "-N", "", "-C", f"root@{name}", "-f", str(key)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return key.read_bytes(), key.with_suffix(".pub").read_text().strip()
