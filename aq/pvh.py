"""An x86-64 guest kernel unpacked for QEMU's PVH entry, so the guest skips unpacking it.

A bzImage carries the kernel compressed; booted with -kernel, the guest first runs
SeaBIOS's loader, then the kernel's own decompressor: under TCG the first kernel line
came 1.1-1.2 s after QEMU's start. The same kernel as an ELF with a PVH entry note
(Linux's CONFIG_PVH, which Alpine's kernels have) is loaded by QEMU straight into
place: its first line came at 0.5 s, and `/init` about 1 s sooner (bench/BOOT-STALLS.md,
ninth pass).

The bzImage comes from the guest, so nothing in it is trusted: the header is checked
field by field, the unpacked size is bounded, and the result is kept only when it is an
x86-64 ELF executable that declares the PVH entry. Anything else (another compression
than gzip, no such note, an aarch64 Image) gives None, and the bzImage is booted as
before.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from aq import gunzip, paths, tinyelf

ELF_MAX = 256 << 20  # unpacked bytes; Alpine's x86-64 kernel is 39 MB
ELF_NAME = "kernel.elf"  # beside the copy's "kernel"
_XEN_PHYS32_ENTRY = 18  # XEN_ELFNOTE_PHYS32_ENTRY: the PVH entry point
_PT_NOTE = 4
HEADER_SIZE = 0x250  # the boot header, up to the payload's offset and length


def unpack(bzimage: bytes, limit: int = ELF_MAX) -> bytes | None:
    """The ELF kernel inside a bzImage whose payload is gzip, if it has a PVH entry."""
    if len(bzimage) < HEADER_SIZE or not _is_bzimage(bzimage):
        return None
    (version,) = struct.unpack_from("<H", bzimage, 0x206)
    if version < 0x208:  # boot protocol 2.08 added the payload's offset and length
        return None
    setup_sectors = bzimage[0x1F1] or 4
    offset, length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sectors + 1) * 512 + offset
    payload = bzimage[start : start + length]
    if len(payload) != length:
        return None
    found = gunzip.member(payload, limit)
    return found[0] if found is not None and has_pvh_entry(found[0]) else None


def _is_bzimage(head: bytes) -> bool:
    return head[0x202:0x206] == b"HdrS"


def has_pvh_entry(elf: bytes) -> bool:
    """Whether `elf` is a 64-bit little-endian x86-64 executable with a PVH entry note."""
    if len(elf) < 64 or elf[:4] != b"\x7fELF" or elf[4:6] != b"\x02\x01":
        return False
    e_type, e_machine = struct.unpack_from("<HH", elf, 16)
    (e_phoff,) = struct.unpack_from("<Q", elf, 32)
    e_phentsize, e_phnum = struct.unpack_from("<HH", elf, 54)
    if e_type != 2 or e_machine != tinyelf.MACHINES["x86_64"] or e_phentsize < 56:
        return False
    for index in range(e_phnum):
        at = e_phoff + index * e_phentsize
        if at + 56 > len(elf):
            return False
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", elf, at)
        if p_type == _PT_NOTE and _notes_have_entry(elf[p_offset : p_offset + p_filesz]):
            return True
    return False


def _notes_have_entry(notes: bytes) -> bool:
    at = 0
    while at + 12 <= len(notes):
        namesz, descsz, kind = struct.unpack_from("<III", notes, at)
        name_at = at + 12
        desc_at = name_at + (namesz + 3) // 4 * 4
        end = desc_at + (descsz + 3) // 4 * 4
        if desc_at + descsz > len(notes):  # a note that claims more than there is
            return False
        if kind == _XEN_PHYS32_ENTRY and notes[name_at:desc_at] == b"Xen\0" and descsz >= 4:
            return True
        at = end
    return False


def write_beside(kernel: Path) -> bool:
    """Write the PVH ELF of the bzImage `kernel` beside it (ELF_NAME), replacing any
    earlier one; False, and no ELF left there, when the kernel has none."""
    target = kernel.with_name(ELF_NAME)
    with kernel.open("rb") as handle:
        # The header first: an aarch64 Image (refreshed at every clean stop) is not
        # read whole only to be refused.
        head = handle.read(HEADER_SIZE)
        elf = unpack(head + handle.read()) if _is_bzimage(head) else None
    if elf is None:
        target.unlink(missing_ok=True)
        return False
    temp = target.with_name(f".{ELF_NAME}.{os.getpid()}")
    try:
        with paths.open_private(temp) as out:
            out.write(elf)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    return True
