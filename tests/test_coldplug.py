"""The archive that narrows the initramfs's device helper, and when aq uses it.

Read back here as the kernel reads it (gzip, then newc cpio entries). That a real
kernel accepts it after a real Alpine initramfs, and that the guest's /dev is the same
as after a firmware boot, is shown in tests/test_e2e_lifecycle.py.
"""

from __future__ import annotations

import gzip
import os
import platform
import shutil
import stat
import subprocess

import pytest

from aq import coldplug


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
def test_the_overlay_replaces_sbin_mdev_with_a_block_devices_only_helper(arch):
    entries = _entries(coldplug.overlay(arch))
    assert [(n, stat.S_IFMT(m)) for n, m, _ in entries] == [
        ("sbin", stat.S_IFDIR),
        ("sbin/mdev", stat.S_IFREG),  # a file: the kernel keeps a symlink over a symlink
    ]
    _, mode, data = entries[1]
    assert stat.S_IMODE(mode) == 0o755 and data == coldplug.helper(arch)
    if arch == "x86_64":
        assert data.startswith(b"\x7fELF\x02\x01\x01")  # 64-bit, little-endian
    else:
        assert data == coldplug.HELPER and data.startswith(b"#!/bin/sh\n")


def test_the_overlay_is_always_the_same_bytes():
    assert coldplug.overlay("x86_64") == coldplug.overlay("x86_64")
    assert coldplug.initrd_tail(True, "x86_64") == coldplug.overlay("x86_64")
    assert coldplug.initrd_tail(False, "x86_64") == b""


def test_the_x86_64_code_is_its_listing_assembled(tmp_path):
    """The bytes shipped are what binutils makes of X86_64_SOURCE, nothing else."""
    source = tmp_path / "helper.s"
    source.write_text("\t.text\n\t.globl _start\n" + coldplug.X86_64_SOURCE)
    obj, raw = tmp_path / "helper.o", tmp_path / "helper.bin"
    subprocess.run(["as", "--64", "-o", obj, source], check=True)
    subprocess.run(["objcopy", "-O", "binary", "-j", ".text", obj, raw], check=True)
    assert raw.read_bytes() == coldplug.X86_64_CODE


def test_the_x86_64_helper_is_an_executable_readelf_accepts(tmp_path):
    program = tmp_path / "mdev"
    program.write_bytes(coldplug.helper("x86_64"))
    out = subprocess.run(
        ["readelf", "-h", "-l", program], capture_output=True, text=True, check=True
    ).stdout
    assert "EXEC (Executable file)" in out and "X86-64" in out
    assert "Entry point address:               0x400078" in out
    assert "LOAD" in out and "R E" in out


x86_64_host = pytest.mark.skipif(
    platform.machine() != "x86_64" or os.uname().sysname != "Linux",
    reason="runs the x86-64 Linux helper natively",
)


def _run_helper(folder, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The x86-64 helper run in `folder` with exactly `env`, its busybox path pointed at
    ./fake-bb.sh there (a string of the same length, so the code is unchanged)."""
    code = coldplug.helper("x86_64")
    assert code.count(b"/bin/busybox\0") == 1
    program = folder / "mdev"
    program.write_bytes(code.replace(b"/bin/busybox\0", b"./fake-bb.sh\0"))
    program.chmod(0o755)
    fake = folder / "fake-bb.sh"
    fake.write_text('#!/bin/sh\necho "ran $0 $# [$SUBSYSTEM] [$DEVNAME]"\nexit 7\n')
    fake.chmod(0o755)
    return subprocess.run(
        [str(program)], cwd=folder, env=env, capture_output=True, text=True, timeout=30
    )


@x86_64_host
def test_the_x86_64_helper_hands_block_events_to_mdev(tmp_path):
    result = _run_helper(tmp_path, {"ACTION": "add", "SUBSYSTEM": "block", "DEVNAME": "vda3"})
    # busybox is exec'd as "mdev" with no arguments and the event's environment.
    assert result.returncode == 7
    assert result.stdout.startswith("ran ") and result.stdout.endswith(" 0 [block] [vda3]\n")


@x86_64_host
@pytest.mark.parametrize(
    "env",
    [
        {"SUBSYSTEM": "tty", "DEVNAME": "tty1"},
        {"SUBSYSTEM": "blockx", "DEVNAME": "x"},  # the whole value, not a prefix
        {"SUBSYSTEM": "bloc"},
        {"XSUBSYSTEM": "block"},
        {"DEVNAME": "vda"},
        {},
    ],
)
def test_the_x86_64_helper_ends_at_once_for_everything_else(tmp_path, env):
    result = _run_helper(tmp_path, env)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@x86_64_host
def test_the_x86_64_helper_ends_quietly_when_busybox_is_missing(tmp_path):
    program = tmp_path / "mdev"
    program.write_bytes(coldplug.helper("x86_64").replace(b"/bin/busybox", b"/nonexistent"))
    program.chmod(0o755)
    result = subprocess.run([str(program)], env={"SUBSYSTEM": "block"}, capture_output=True)
    assert result.returncode == 0


def test_binutils_are_there_for_the_listing_check():
    # CI installs binutils (.ci/setup): the listing check above must never be skipped.
    assert shutil.which("as") and shutil.which("objcopy") and shutil.which("readelf")


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
