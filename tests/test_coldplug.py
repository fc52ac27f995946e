"""The archive that narrows the initramfs's device helper, and when aq uses it.

Read back here as the kernel reads it (gzip, then newc cpio entries). That a real
kernel accepts it after a real Alpine initramfs, and that the guest's /dev is the same
as after a firmware boot, is shown in tests/test_e2e_lifecycle.py.
"""

from __future__ import annotations

import gzip
import os
import stat
import subprocess

import pytest

from aq import blockhelper, coldplug


def _entries(archive: bytes) -> list[tuple[str, int, bytes]]:
    """(name, mode, data) of each newc entry up to the trailer."""
    raw, at, found = gzip.decompress(archive), 0, []
    while True:
        header = raw[at : at + 110]
        assert header[:6] == b"070701"
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, size, name_size = fields[1], fields[6], fields[11]
        name = raw[at + 110 : at + 110 + name_size - 1].decode()
        assert raw[at + 110 + name_size - 1] == 0
        at = (at + 110 + name_size + 3) & ~3
        data = raw[at : at + size]
        at = (at + size + 3) & ~3
        if name == "TRAILER!!!":
            assert raw[at:] == b""
            return found
        found.append((name, mode, data))


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_the_overlay_replaces_sbin_mdev_with_the_block_devices_helper(arch):
    entries = _entries(coldplug.overlay(arch))
    assert [(n, stat.S_IFMT(m)) for n, m, _ in entries] == [
        ("sbin", stat.S_IFDIR),
        ("sbin/mdev", stat.S_IFREG),  # a file: the kernel keeps a symlink over a symlink
        ("sbin/aq-partition", stat.S_IFREG),
    ]
    _, mode, data = entries[1]
    assert stat.S_IMODE(mode) == 0o755 and data == blockhelper.program(arch)
    name, mode, data = entries[2]
    assert "/" + name == blockhelper.SCRIPT  # where the helper program execs it
    assert stat.S_IMODE(mode) == 0o755 and data == coldplug.PARTITION_SCRIPT.encode()


def _partition_event(folder, env: dict[str, str]):
    """The partitions' script run by a POSIX shell with exactly `env`, its /dev in
    `folder`/dev and its busybox a fake that says how it was run: (exit status, what
    it printed, the by-partuuid links as {name: target})."""
    dev = folder / "dev"
    dev.mkdir()
    fake = folder / "busybox"
    fake.write_text('#!/bin/sh\necho "busybox $*"\nexit 7\n')
    fake.chmod(0o755)
    text = coldplug.PARTITION_SCRIPT.replace("/dev/", f"{dev}/").replace("/bin/busybox", str(fake))
    script = folder / "aq-partition"
    script.write_text(text)
    script.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", **env}
    result = subprocess.run([script], env=env, capture_output=True, text=True, timeout=30)
    links = dev / "disk" / "by-partuuid"
    made = {p.name: os.readlink(p) for p in links.iterdir()} if links.exists() else {}
    return result.returncode, result.stdout, made


ADDED = {"ACTION": "add", "SUBSYSTEM": "block", "DEVTYPE": "partition"}


@pytest.mark.parametrize(
    ("event", "link"),
    [
        ({"DEVNAME": "vda3", "PARTUUID": "9d4acde0-03", "PARTN": "3"}, "9d4acde0-03"),  # MBR
        (
            {"DEVNAME": "nvme0n1p2", "PARTUUID": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"},
            "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",  # GPT, a partition with no name
        ),
    ],
)
def test_a_partition_is_linked_by_the_partuuid_the_kernel_gave(tmp_path, event, link):
    # As mdev's persistent-storage script names it: `../../NAME`, under the PARTUUID.
    status, out, made = _partition_event(tmp_path, {**ADDED, **event})
    assert (status, out, made) == (0, "", {link: f"../../{event['DEVNAME']}"})
    # Made as mdev makes it (mdev clears its umask before it runs a script).
    assert stat.S_IMODE((tmp_path / "dev" / "disk" / "by-partuuid").stat().st_mode) == 0o777


@pytest.mark.parametrize(
    "event",
    [
        # A GPT partition with a name: mdev's script also makes its by-partlabel link.
        {"DEVNAME": "vda1", "PARTUUID": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "PARTNAME": "EFI"},
        {"DEVNAME": "vda1"},  # no PARTUUID (an older kernel, a table without one)
        {"DEVNAME": "vda1", "PARTUUID": ""},
        {"DEVNAME": "vda1", "PARTUUID": "../../etc/x"},  # nothing odd becomes a path
        {"DEVNAME": "vda1", "PARTUUID": "9D4ACDE0-01"},
        {"DEVNAME": "cciss/c0d0p1", "PARTUUID": "9d4acde0-01"},
        {"DEVNAME": "", "PARTUUID": "9d4acde0-01"},
        {"ACTION": "remove", "DEVNAME": "vda1", "PARTUUID": "9d4acde0-01"},
    ],
)
def test_anything_else_goes_to_mdev_as_before(tmp_path, event):
    status, out, made = _partition_event(tmp_path, {**ADDED, **event})
    assert (status, out, made) == (7, "busybox mdev\n", {})


def test_the_overlay_is_always_the_same_bytes():
    assert coldplug.overlay("x86_64") == coldplug.overlay("x86_64")
    assert coldplug.overlay("x86_64") != coldplug.overlay("aarch64")
    assert coldplug.initrd_tail(True, "aarch64") == coldplug.overlay("aarch64")
    assert coldplug.initrd_tail(False, "x86_64") == b""


@pytest.mark.parametrize(
    ("sysinit", "replays"),
    [
        (["devfs", "dmesg", "mdev", "hwdrivers"], True),  # what setup-alpine enables
        (["devfs", "mdevd", "mdevd-init", "hwdrivers"], True),
        (["udev", "udev-trigger", "udev-settle"], True),
        (["devfs", "dmesg", "hwdrivers"], False),  # nothing redoes what mdev did
        (["udev"], False),  # the daemon alone replays nothing already there
        ([], False),
    ],
)
def test_only_a_sysinit_that_replays_device_events_idles_the_helper(sysinit, replays):
    assert coldplug.replays_devices(sysinit) is replays
