"""The guest's initramfs handed to QEMU unpacked, so the guest's kernel skips inflating it.

mkinitfs writes a gzip'd cpio archive. Booted as it is, the guest's kernel inflates it
before `/init` runs: under TCG, `Unpacking initramfs` to `Freeing initrd memory` took
0.52 and 0.43 s for Alpine's 6.4 MB initramfs, against 0.22 and 0.21 s for the same
archive unpacked (12.5 MB), and `/init` ran 0.35 s sooner (bench/BOOT-STALLS.md,
eleventh pass). The kernel takes any number of archives one after the other,
uncompressed ones among them, and skips the zeros between them, so the files it
unpacks are the same.

The bytes come from the guest, so nothing in them is trusted: only gzip members that
each hold a newc cpio archive are unpacked, within a bound; anything else (another
compression, a member that is not cpio, more than the bound) is left as it came, and
the guest's kernel inflates it as before.
"""

from __future__ import annotations

import os
from pathlib import Path

from aq import gunzip, paths

UNPACKED_MAX = 128 << 20  # bytes; Alpine's initramfs unpacks to about 12.5 MB
_CPIO = (b"070701", b"070702")  # newc, and newc with checksums


def unpacked(data: bytes, limit: int = UNPACKED_MAX) -> bytes | None:
    """The cpio archives of `data` unpacked, if `data` is gzip members each holding one
    (zeros between members allowed); else None."""
    out = bytearray()
    rest = data
    while rest:
        found = gunzip.member(rest, limit - len(out))
        if found is None or found[0][:6] not in _CPIO:
            return None
        chunk, rest = found
        out += chunk
        out += b"\0" * (-len(out) % 4)  # the next archive starts on a 4-byte boundary
        rest = rest.lstrip(b"\0")
    return bytes(out) if out else None


def unpack_file(path: Path, tail_size: int = 0) -> bool:
    """Rewrite the initramfs file `path` unpacked, keeping its last `tail_size` bytes
    (aq's own archive) after it as they are; False, and the file unchanged, when it
    does not unpack."""
    data = path.read_bytes()
    body, tail = data[: len(data) - tail_size], data[len(data) - tail_size :]
    inflated = unpacked(body)
    if inflated is None:
        return False
    # A new file in its place: never the same inode, which other copies may share.
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        with paths.open_private(temp) as out:
            out.write(inflated)
            out.write(tail)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return True
