"""The RNG-reseeding program a resumed clone runs (aq.reseed): its bytes are its
listings assembled, it runs, and it reaches the guest through printf intact.

That a clone of a live snapshot runs it and reports its RNG reseeded is shown in
tests/test_e2e_snapshots.py.
"""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from aq import identity, reseed
from tests.test_blockhelper import TOOLS, assembled

SOURCES = {"x86_64": reseed.X86_64_SOURCE, "aarch64": reseed.AARCH64_SOURCE}
ARCHES = sorted(SOURCES)


@pytest.mark.parametrize("arch", ARCHES)
def test_the_code_is_its_listing_assembled(tmp_path, arch):
    assert assembled(tmp_path, arch, SOURCES[arch]) == reseed.CODES[arch]


def _run(folder, arch: str, device: bytes = b"/dev/urandom") -> int:
    code = reseed.program(arch)
    assert code.count(reseed.PATH) == 1 and len(device) == len(b"/dev/urandom")
    program = folder / "reseed"
    program.write_bytes(code.replace(reseed.PATH, device + b"\0"))
    program.chmod(0o700)
    return subprocess.run([*TOOLS[arch][2], str(program)], cwd=folder, timeout=60).returncode


@pytest.mark.parametrize("arch", ARCHES)
def test_it_reseeds_the_kernel_rng(tmp_path, arch):
    # RNDRESEEDCRNG needs CAP_SYS_ADMIN: root gets 0, anyone else EPERM.
    assert _run(tmp_path, arch) == (0 if os.geteuid() == 0 else errno.EPERM)


@pytest.mark.parametrize("arch", ARCHES)
def test_it_exits_with_the_errno_when_it_cannot(tmp_path, arch):
    assert _run(tmp_path, arch, b"/nonexistent") == errno.ENOENT
    # A file that is not the RNG: the ioctl is refused.
    (tmp_path / "not-random").write_bytes(b"")
    assert _run(tmp_path, arch, b"./not-random") == errno.ENOTTY


@pytest.mark.parametrize("arch", ARCHES)
def test_printf_writes_the_program_byte_for_byte(tmp_path, arch):
    out = tmp_path / "written"
    fmt = reseed.printf_format(reseed.program(arch))
    assert set(fmt) <= set("\\01234567")  # nothing printf would read as a conversion
    subprocess.run(["sh", "-c", 'printf "$1" >"$2"', "sh", fmt, out], check=True)
    assert out.read_bytes() == reseed.program(arch)


@pytest.mark.parametrize(
    ("out", "said"),
    [
        (b"reseed 0\n", "RNG reseeded"),
        (b"noise\nreseed 126\n", "RNG not reseeded (status 126)"),
        (b"reseed 1\n", "RNG not reseeded (status 1)"),
        (b"", "RNG reseed not reported"),
        (b"reseed 0x\n", "RNG reseed not reported"),
        (b"reseed 99999\n", "RNG reseed not reported"),
        (b"\x1b[2Jreseed 0", "RNG reseed not reported"),
    ],
)
def test_the_guest_report_is_read_as_a_number_only(out, said):
    assert identity.reseed_outcome(out) == said
