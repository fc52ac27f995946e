"""aq.pvh: a guest's bzImage unpacked for QEMU's PVH entry, and nothing else.

The bzImage is the guest's, so these build small hostile ones. That QEMU boots a real
Alpine kernel through the ELF is shown in tests/test_e2e_lifecycle.py.
"""

from __future__ import annotations

import gzip
import struct

import pytest

from aq import bootcopy, pvh


def _note(name: bytes, kind: int, desc: bytes) -> bytes:
    pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name), len(desc), kind) + pad(name) + pad(desc)


def _elf(notes: bytes, machine: int = 62, elf_type: int = 2) -> bytes:
    """A 64-bit ELF header, one PT_NOTE segment right after it, then the notes."""
    phoff, phentsize = 64, 56
    header = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header += struct.pack(
        "<HHIQQQIHHHHHH", elf_type, machine, 1, 0, phoff, 0, 0, 64, phentsize, 1, 0, 0, 0
    )
    at = phoff + phentsize
    segment = struct.pack("<IIQQQQQQ", 4, 4, at, 0, 0, len(notes), len(notes), 4)
    return header + segment + notes


PVH_ELF = _elf(_note(b"Xen\0", 6, b"linux\0") + _note(b"Xen\0", 18, b"\xa0\x35\x00\x03"))


def _bzimage(payload: bytes, version: int = 0x20F, setup_sectors: int = 4) -> bytes:
    """A bzImage: its setup sectors with the boot header, then the payload."""
    setup = bytearray((setup_sectors + 1) * 512)
    setup[0x1F1] = setup_sectors
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, version)
    struct.pack_into("<II", setup, 0x248, 100, len(payload))  # after 100 bytes of code
    return bytes(setup) + bytes(100) + payload + bytes(16)


def test_a_gzip_payload_with_a_pvh_note_is_unpacked() -> None:
    assert pvh.unpack(_bzimage(gzip.compress(PVH_ELF))) == PVH_ELF


@pytest.mark.parametrize(
    ("image", "why"),
    [
        (b"", "empty"),
        (_bzimage(gzip.compress(PVH_ELF))[:0x240], "cut inside the header"),
        (_bzimage(gzip.compress(PVH_ELF))[:700], "payload cut short"),
        (_bzimage(gzip.compress(PVH_ELF), version=0x207), "boot protocol without a payload field"),
        (b"MZ" + _bzimage(gzip.compress(PVH_ELF))[2:0x202] + b"XXXX", "no HdrS"),
        (_bzimage(b"\x28\xb5\x2f\xfd" + bytes(64)), "zstd, which aq does not unpack"),
        (_bzimage(b"\x1f\x8b" + bytes(64)), "not gzip after its magic"),
        (_bzimage(gzip.compress(_elf(_note(b"Xen\0", 6, b"linux\0")))), "no PVH entry note"),
        (_bzimage(gzip.compress(_elf(_note(b"Xan\0", 18, b"1234")))), "another owner's note"),
        (_bzimage(gzip.compress(_elf(_note(b"Xen\0", 18, b"")))), "a note with no address"),
        (_bzimage(gzip.compress(_elf(PVH_ELF[120:], machine=183))), "aarch64"),
        (_bzimage(gzip.compress(_elf(PVH_ELF[120:], elf_type=3))), "not an executable"),
        (_bzimage(gzip.compress(b"\x7fELF" + bytes(200))), "a 32-bit or empty header"),
        (_bzimage(gzip.compress(PVH_ELF[:70])), "its segment table cut off"),
    ],
)
def test_anything_else_gives_none(image: bytes, why: str) -> None:
    assert pvh.unpack(image) is None, why


def test_the_unpacked_size_is_bounded() -> None:
    bomb = _bzimage(gzip.compress(PVH_ELF + bytes(1 << 20)))
    assert pvh.unpack(bomb, limit=1 << 16) is None
    assert pvh.unpack(bomb) is not None


def test_a_note_table_that_loops_or_overruns_ends(tmp_path) -> None:
    huge = struct.pack("<III", 0xFFFFFFF0, 0xFFFFFFF0, 18) + b"Xen\0"
    assert pvh.unpack(_bzimage(gzip.compress(_elf(huge)))) is None


def test_written_beside_the_kernel_or_removed(tmp_path) -> None:
    kernel = tmp_path / "kernel"
    kernel.write_bytes(_bzimage(gzip.compress(PVH_ELF)))
    assert pvh.write_beside(kernel)
    elf = tmp_path / pvh.ELF_NAME
    assert elf.read_bytes() == PVH_ELF and elf.stat().st_mode & 0o777 == 0o600
    kernel.write_bytes(_bzimage(b"\x28\xb5\x2f\xfd" + bytes(64)))  # a kernel without one
    assert not pvh.write_beside(kernel)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kernel"]


def test_a_copy_with_the_elf_boots_it_and_shares_it(tmp_path) -> None:
    source, target = tmp_path / "base", tmp_path / "vm"
    source.mkdir()
    (source / "kernel").write_bytes(_bzimage(gzip.compress(PVH_ELF)))
    (source / "initrd").write_bytes(b"initrd")
    assert pvh.write_beside(source / "kernel")
    copy = bootcopy.Copy("/boot/extlinux.conf", "/boot/vmlinuz", ["/boot/i"], "ro", "k", "i", True)
    bootcopy.write_record(source, bootcopy.Copy(**{**copy.__dict__, "pvh": True}))
    assert bootcopy.share(source, target)
    shared = bootcopy.read_record(target)
    assert shared.pvh and shared.files_in(target) == (target / pvh.ELF_NAME, target / "initrd")
    assert (target / pvh.ELF_NAME).stat().st_ino == (source / pvh.ELF_NAME).stat().st_ino
    # A record from an older aq has no such field: its bzImage is booted.
    assert copy.files_in(target)[0] == target / "kernel"
