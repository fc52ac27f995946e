"""The initramfs's /sbin/mdev stand-in (aq.blockhelper): its bytes are its listings
assembled, and it runs as the script it replaces would.

That a real Alpine initramfs runs it and the guest's /dev comes out as after a
firmware boot is shown in tests/test_e2e_lifecycle.py (x86-64) and
tests/test_e2e_aarch64.py (the by-partuuid links only the partitions' mdev makes).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess

import pytest

from aq import blockhelper

# (assembler, objcopy, how to run a program of that architecture on this host)
TOOLS = {
    "x86_64": ("as", "objcopy", []),
    "aarch64": ("aarch64-linux-gnu-as", "aarch64-linux-gnu-objcopy", ["qemu-aarch64"]),
}
SOURCES = {"x86_64": blockhelper.X86_64_SOURCE, "aarch64": blockhelper.AARCH64_SOURCE}
CODES = {"x86_64": blockhelper.X86_64_CODE, "aarch64": blockhelper.AARCH64_CODE}
ARCHES = sorted(TOOLS)


def test_ci_has_the_tools_these_checks_need():
    # .ci/setup installs binutils, binutils-aarch64-linux-gnu and qemu-user: the checks
    # below must never be skipped for want of them.
    assert platform.machine() == "x86_64" and os.uname().sysname == "Linux"
    for assembler, objcopy, runner in TOOLS.values():
        for tool in (assembler, objcopy, *runner):
            assert shutil.which(tool), tool


def assembled(folder, arch: str, listing: str) -> bytes:
    """The machine code binutils makes of `listing` for `arch` (its .text, raw)."""
    assembler, objcopy, _ = TOOLS[arch]
    source = folder / "listing.s"
    source.write_text("\t.text\n\t.globl _start\n" + listing)
    obj, raw = folder / "listing.o", folder / "listing.bin"
    subprocess.run([assembler, "-o", obj, source], check=True)
    subprocess.run([objcopy, "-O", "binary", "-j", ".text", obj, raw], check=True)
    return raw.read_bytes()


@pytest.mark.parametrize("arch", ARCHES)
def test_the_code_is_its_listing_assembled(tmp_path, arch):
    """The bytes shipped are what binutils makes of the listing, nothing else."""
    assert assembled(tmp_path, arch, SOURCES[arch]) == CODES[arch]


@pytest.mark.parametrize(("arch", "machine"), [("x86_64", "X86-64"), ("aarch64", "AArch64")])
def test_each_program_is_an_executable_readelf_accepts(tmp_path, arch, machine):
    program = tmp_path / "mdev"
    program.write_bytes(blockhelper.program(arch))
    out = subprocess.run(
        ["readelf", "-h", "-l", program], capture_output=True, text=True, check=True
    ).stdout
    assert "EXEC (Executable file)" in out and machine in out
    assert "Entry point address:               0x400078" in out
    assert "LOAD" in out and "R E" in out


SCRIPT = blockhelper.SCRIPT.encode()
FAKE = b"./fake-script".ljust(len(SCRIPT), b"_")  # the same length: the code is unchanged


def _run(folder, arch: str, env: dict[str, str], script: bytes = FAKE):
    """The program for `arch` run in `folder` with exactly `env`, its script's path
    replaced by `script`; the fake script there says how it was run."""
    code = blockhelper.program(arch)
    assert code.count(SCRIPT + b"\0") == 1 and len(script) == len(SCRIPT)
    program = folder / "mdev"
    program.write_bytes(code.replace(SCRIPT + b"\0", script + b"\0"))
    program.chmod(0o755)
    fake = folder / FAKE.decode()
    fake.write_text('#!/bin/sh\necho "ran $# [$DEVTYPE] [$DEVNAME]"\nexit 7\n')
    fake.chmod(0o755)
    return subprocess.run(
        [*TOOLS[arch][2], str(program)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("arch", ARCHES)
def test_a_partition_event_goes_to_the_partitions_script(tmp_path, arch):
    event = {"ACTION": "add", "SUBSYSTEM": "block", "DEVTYPE": "partition", "DEVNAME": "vda3"}
    result = _run(tmp_path, arch, event)
    # The script is exec'd in its place, with no arguments and the event's environment.
    assert (result.returncode, result.stdout) == (7, "ran 0 [partition] [vda3]\n")


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize(
    "env",
    [
        {"SUBSYSTEM": "tty", "DEVNAME": "tty1"},
        # A whole disk or a loop device: sysinit's mdev redoes its links (busybox's
        # blkid finds its UUID and label; only partitions have a PARTUUID).
        {"SUBSYSTEM": "block", "DEVTYPE": "disk", "DEVNAME": "vda"},
        {"DEVTYPE": "partitions", "DEVNAME": "x"},  # the whole value, not a prefix
        {"DEVTYPE": "partitio"},
        {"XDEVTYPE": "partition"},
        {"DEVNAME": "vda1"},
        {},
    ],
)
def test_every_other_event_ends_at_once(tmp_path, arch, env):
    result = _run(tmp_path, arch, env)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize("arch", ARCHES)
def test_it_ends_quietly_when_the_script_is_missing(tmp_path, arch):
    missing = b"/nonexistent".ljust(len(SCRIPT), b"_")
    result = _run(tmp_path, arch, {"DEVTYPE": "partition"}, script=missing)
    assert (result.returncode, result.stdout) == (0, "")
