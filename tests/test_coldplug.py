"""The archive that narrows the initramfs's device helper, and when aq uses it.

Read back here as the kernel reads it (gzip, then newc cpio entries). That a real
kernel accepts it after a real Alpine initramfs, and that the guest's /dev is the same
as after a firmware boot, is shown in tests/test_e2e_lifecycle.py.
"""

from __future__ import annotations

import gzip
import stat

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
    ]
    _, mode, data = entries[1]
    assert stat.S_IMODE(mode) == 0o755 and data == blockhelper.program(arch)


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
