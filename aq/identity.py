"""A resumed guest's clock, and a clone's own identity, set through the command channel.

A clone of a live snapshot wakes up as its source: same hostname, same MAC inside the
guest (virtio-net's MAC travels in the migration stream), same DHCP lease, SSH host
keys, machine-id and RNG state. Before it is called ready, the agent gives it its own:
hostname, the MAC aq recorded for it, a fresh DHCP lease, new SSH host keys (recorded
as `aq ssh` does), a new machine-id, fresh entropy (besides QEMU's vmgenid device,
which makes the kernel reseed itself), and the clock set to now.
"""

from __future__ import annotations

import os
import time

from aq import paths
from aq.errors import AqError, GuestTimeout
from aq.guest import channel
from aq.safetext import for_terminal
from aq.store.models import Vm

CLOCK = 'date -u -s "@$1" >/dev/null'

# $1 now (seconds), $2 hostname, $3 MAC; stdin: 64 random bytes from the host.
IDENTITY = r"""
set -u
date -u -s "@$1" >/dev/null
head -c 64 >/dev/urandom
old=$(hostname)
echo "$2" >/etc/hostname && hostname "$2"
if [ -f /etc/hosts ] && [ "$old" != localhost ] && [ "$old" != "$2" ]; then
	sed -i -e "s/[[:space:]]$old\$/ $2/" -e "s/[[:space:]]$old[[:space:]]/ $2 /g" /etc/hosts
fi
tr -d - </proc/sys/kernel/random/uuid >/etc/machine-id
if [ -d /var/lib/dbus ]; then cp /etc/machine-id /var/lib/dbus/machine-id; fi
if command -v ssh-keygen >/dev/null; then
	rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub
	ssh-keygen -A >/dev/null
	rc-service sshd --ifstarted restart >/dev/null 2>&1
fi
dev=$(ls /sys/class/net | grep -v '^lo$' | head -n 1)
[ -n "$dev" ] || exit 0
ifdown "$dev" >/dev/null 2>&1
ip link set "$dev" down
ip link set "$dev" address "$3" || exit 4
ip link set "$dev" up
ifup "$dev" >/dev/null 2>&1 || udhcpc -i "$dev" -n -q >/dev/null 2>&1 || true
"""


def wait_agent(files: paths.VmFiles, deadline: float) -> None:
    """Until the guest's command channel answers (it does soon after `cont`)."""
    while not channel.ping(files, timeout=min(3.0, max(deadline - time.monotonic(), 0.1))):
        if time.monotonic() > deadline:
            raise GuestTimeout("the resumed guest's command channel did not answer", hint="")
        time.sleep(0.05)


def _run(files: paths.VmFiles, argv: list[str], stdin: bytes | None, what: str) -> None:
    status, _, err = channel.capture(files, argv, stdin=stdin, timeout=120)
    if status != 0:
        reason = for_terminal(err[:2048].decode(errors="replace").strip(), one_line=True)
        raise AqError(f"could not {what} in the guest (status {status}): {reason}")


def set_clock(files: paths.VmFiles) -> None:
    """The guest's clock to the host's now (it stood still while suspended)."""
    _run(files, ["sh", "-c", CLOCK, "sh", str(int(time.time()))], None, "set the clock")


def reset(files: paths.VmFiles, vm: Vm) -> None:
    """Give a freshly resumed clone its own identity; record its new SSH host key."""
    from aq import ssh
    from aq.vm import record_host_key

    args = [str(int(time.time())), vm.name, vm.mac]
    _run(files, ["sh", "-c", IDENTITY, "sh", *args], os.urandom(64), "reset the identity")
    try:
        key = ssh.read_host_key(files)
    except AqError:
        return  # no sshd in this guest: nothing to record
    record_host_key(vm.name, key)
    paths.write_private(files.known_hosts, ssh.known_hosts_line(vm.name, key))
