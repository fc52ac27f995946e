"""Narrow the initramfs's device helper when the guest's own device manager redoes its work.

Alpine's initramfs finds the root filesystem with nlplug-findfs, which replays every
device event, runs /sbin/mdev for each one that names a device node (148 in a small
VM) and waits for all of them, even after the root is found. Each mdev parses
Alpine's 160-line mdev.conf again: about 50 ms under TCG, so `Mounting root` took
9-11 s of a 40-50 s boot (bench/BOOT-STALLS.md, seventh pass). The initramfs itself
needs none of it: devtmpfs already holds every node, and mdev only sets owners, modes
and links and runs its scripts.

A guest whose sysinit runlevel starts a device manager that replays every device
event again (Alpine's mdev, which setup-alpine enables, or mdevd or udev) applies the
same rules to the same devtmpfs a few seconds later. One thing it cannot redo: the
links mdev's persistent-storage script makes for partitions with the initramfs's
util-linux blkid (/dev/disk/by-partuuid), which an installed Alpine lacks (busybox's
blkid reports no PARTUUID). So for such a guest a direct boot appends a small archive
to its initramfs whose /sbin/mdev (aq.blockhelper) ends at once for everything but a
partition, whole disks included (a disk has no PARTUUID, and its script's run cost
0.4-0.5 s). A partition's event goes to PARTITION_SCRIPT below, which makes that one
link from the PARTUUID the kernel puts in the event, and hands the event to mdev only
when it cannot (a GPT partition with a name, whose by-partlabel link mdev's script
also makes, or names it does not expect). mdev and its script took 0.4-0.55 s a
partition under TCG, the script about 50 ms. The guest's /dev ends up the same as
after a firmware boot (compared node by node in tests/test_e2e_lifecycle.py and
tests/test_e2e_aarch64.py). A guest without such a service boots its initramfs
unchanged.
"""

from __future__ import annotations

import gzip

from aq import blockhelper

# Services that replay every device event when sysinit starts them: busybox mdev
# (`mdev -s`), mdevd's coldplug, udev's trigger.
COLDPLUG_SERVICES = frozenset({"mdev", "mdevd-init", "udev-trigger"})


def replays_devices(sysinit_services) -> bool:
    """Whether a guest whose sysinit runlevel holds these services redoes /dev itself."""
    return not COLDPLUG_SERVICES.isdisjoint(sysinit_services)


# A partition's event in the initramfs (run by aq.blockhelper, at its SCRIPT path):
# the by-partuuid link exactly as mdev's persistent-storage script names it (the
# kernel's PARTUUID, lower-case hex for MBR and GPT alike, and `../../NAME`, in a
# folder of mode 0777 since mdev clears its umask), else mdev as before. Busybox ash;
# only what the kernel put in the event is read.
PARTITION_SCRIPT = """#!/bin/sh
# aq: a partition's link by PARTUUID, which the guest's sysinit cannot redo (see
# aq.coldplug); it redoes everything else about the node. mdev when this cannot.
umask 0 # as mdev runs its scripts: the folder is then made as after a firmware boot
plain() { case $1 in '' | *[!0-9a-z-]*) return 1 ;; esac; }
if [ "$ACTION" = add ] && [ -z "$PARTNAME" ] && plain "$PARTUUID" && plain "$DEVNAME" &&
	mkdir -p /dev/disk/by-partuuid &&
	ln -sf "../../$DEVNAME" "/dev/disk/by-partuuid/$PARTUUID"; then
	exit 0
fi
exec /bin/busybox mdev
"""


def _entry(name: str, ino: int, mode: int, data: bytes = b"", nlink: int = 1) -> bytes:
    """One newc cpio entry (the format the kernel unpacks), padded to 4 bytes."""
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
    header = b"070701" + "".join(f"{v:08X}" for v in fields).encode() + encoded
    header += b"\0" * (-len(header) % 4)
    return header + data + b"\0" * (-len(data) % 4)


def overlay(arch: str) -> bytes:
    """A gzip'd cpio archive to append to an initramfs: its /sbin/mdev is the helper
    program for `arch`, and the partitions' script is beside it.

    The kernel unpacks archives one after the other into the same root, a later file
    replacing an earlier one; after a compressed archive, only a compressed one is
    accepted. /sbin/mdev must be a regular file: the unpacker replaces an existing
    entry of another type, but keeps an existing symlink (/sbin/mdev is one, to
    busybox) when the new entry is a symlink too. Always the same bytes (no
    timestamps), so a copy's contents are stable."""
    archive = (
        _entry("sbin", 1, 0o040755, nlink=2)
        + _entry("sbin/mdev", 2, 0o100755, blockhelper.program(arch))
        + _entry(blockhelper.SCRIPT.lstrip("/"), 3, 0o100755, PARTITION_SCRIPT.encode())
        + _entry("TRAILER!!!", 0, 0)
    )
    return gzip.compress(archive, mtime=0)


def initrd_tail(replays: bool, arch: str) -> bytes:
    """What follows the guest's own initramfs files in aq's copy: the overlay when the
    guest redoes /dev itself, else nothing."""
    return overlay(arch) if replays else b""
