"""Text from the guest or the mirror, made safe to print on a person's terminal.

A compromised guest or a hostile mirror chooses the bytes aq shows in its own messages
(console tails in boot errors, `aq cp` errors, versions and file names in progress
lines). Escape sequences in them (OSC, DCS, CSI...) could retitle the terminal, write
to the clipboard or hide text, so every control character is shown as a visible
escape instead. `aq exec` and `aq console` pass the guest's bytes through on purpose
and do not use this.
"""

from __future__ import annotations

import re

# C0 controls except tab and newline, DEL, C1 controls, and the Unicode marks that
# reorder or hide text (bidi overrides and isolates, line/paragraph separators).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_UNSAFE_ONE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def for_terminal(text: str | bytes, one_line: bool = False) -> str:
    """`text` with every control character shown as `\\xNN` (newlines kept unless
    `one_line`); bytes are decoded as UTF-8 with undecodable bytes replaced."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    pattern = _UNSAFE_ONE_LINE if one_line else _UNSAFE
    return pattern.sub(_visible, text)
