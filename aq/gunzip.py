"""One gzip member from a guest inflated within a bound (aq.pvh, aq.initramfs).

The bytes are the guest's, so the output is bounded before it is made (a small member
can inflate to gigabytes), and anything but a whole, valid member gives None."""

from __future__ import annotations

import zlib

MAGIC = b"\x1f\x8b"


def member(data: bytes, limit: int) -> tuple[bytes, bytes] | None:
    """The gzip member at the start of `data` inflated, and the bytes after it; None
    when `data` does not start with a whole, valid member of at most `limit` bytes."""
    if data[:2] != MAGIC or limit < 0:
        return None
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)  # never 0: zlib reads that as no bound
    except zlib.error:
        return None
    if not inflater.eof or len(out) > limit:
        return None
    return out, inflater.unused_data
