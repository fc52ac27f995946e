"""The smallest static ELF executable Linux runs: a header, one segment, the code.

aq hands the guest a few programs of a few hundred bytes (aq.blockhelper, aq.reseed)
where a shell script would start busybox and a shell (about 20 ms each under TCG) or
could not do the job at all (an ioctl). Their code is position-independent machine
code kept beside its assembly listing, checked against binutils by the tests.
"""

from __future__ import annotations

import struct

LOAD_ADDRESS = 0x400000
ALIGN = 0x10000  # the largest page size either architecture's kernels use
MACHINES = {"x86_64": 62, "aarch64": 183}  # e_machine: EM_X86_64, EM_AARCH64


def executable(arch: str, code: bytes) -> bytes:
    """A minimal static ELF executable for `arch`: its header, one loadable
    read+execute segment holding the whole file, the code right after the two
    headers; no sections."""
    header_size, segment_size = 64, 56
    size = header_size + segment_size + len(code)
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)  # 64-bit, little-endian, version 1
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH",
        2,  # ET_EXEC
        MACHINES[arch],
        1,  # version
        LOAD_ADDRESS + header_size + segment_size,  # entry: the code's first byte
        header_size,  # the segment table right after this header
        0,  # no section table
        0,  # flags
        header_size,
        segment_size,
        1,  # one segment
        0,  # section header size, count and names' index: none
        0,
        0,
    )
    segment = struct.pack(
        "<IIQQQQQQ",
        1,  # PT_LOAD
        5,  # PF_R | PF_X
        0,  # from the file's start
        LOAD_ADDRESS,
        LOAD_ADDRESS,
        size,
        size,
        ALIGN,
    )
    return header + segment + code
