"""Text from the guest or the mirror, made safe to print on a person's terminal.

A compromised guest or a hostile mirror chooses the bytes aq shows in its own messages
(console tails in boot errors, `aq cp` errors, versions and file names in progress
lines). Escape sequences in them (OSC, DCS, CSI...) could retitle the terminal, write
to the clipboard or hide text, so every control character is shown as a visible
escape instead. `aq exec` and `aq console` pass the guest's bytes through on purpose
and do not use this.
"""

from __future__ import annotations

import functools
import re

# Unsafe besides the C0 controls (all of them but tab and newline, unless one line):
# DEL, the C1 controls, and the Unicode marks that reorder or hide text (bidi
# overrides and isolates, line and paragraph separators).
_MARKS = "\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"


@functools.cache
def _unsafe(one_line: bool) -> re.Pattern[str]:
    # Compiled when first needed (about 1 ms): `aq exec` imports this module for the
    # guest's error texts, which most runs never have.
    controls = "\x00-\x1f" if one_line else "\x00-\x08\x0b-\x1f"
    return re.compile(f"[{controls}{_MARKS}]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def for_terminal(text: str | bytes, one_line: bool = False) -> str:
    """`text` with every control character shown as `\\xNN` (newlines kept unless
    `one_line`); bytes are decoded as UTF-8 with undecodable bytes replaced."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return _unsafe(one_line).sub(_visible, text)
