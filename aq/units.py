"""Sizes as people write them (8G, 512M, 2GiB) and as aq prints them."""

from __future__ import annotations

import re

from aq.errors import InvalidInput

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)


MAX_SIZE = float(1 << 60)  # bytes; anything near this is a typo


def parse_size(text: str, default_unit: str = "") -> int:
    """Bytes in `text`: a number with an optional K/M/G/T suffix (powers of 1024)."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise InvalidInput(
            f"invalid size {text!r}", hint="write a number with a unit, such as 8G or 512M"
        )
    number, unit = match.groups()
    unit = (unit or default_unit).lower()
    scaled = float(number) * _UNITS[unit]
    if not scaled < MAX_SIZE:  # also catches inf from a thousand-digit number
        raise InvalidInput(
            f"invalid size {text!r}: it is too large", hint="sizes go up to a few TiB"
        )
    value = int(scaled)
    if value <= 0:
        raise InvalidInput(f"invalid size {text!r}: it must be more than zero")
    return value


def format_size(size: int | None) -> str:
    """A short human size: 1.5G, 200M, 64K, 512B."""
    if size is None:
        return "-"
    for unit, factor in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size >= factor:
            value = size / factor
            return (
                f"{value:.1f}{unit}" if value < 10 and value != int(value) else f"{value:.0f}{unit}"
            )
    return f"{size}B"
