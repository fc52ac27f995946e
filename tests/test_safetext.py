"""Guest and mirror text shown by aq cannot drive the terminal."""

import pytest

from aq.safetext import for_terminal


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text\nnext line\ttab", "plain text\nnext line\ttab"),
        ("\x1b]0;owned\x07title", "\\x1b]0;owned\\x07title"),  # OSC
        ("\x1bP+q\x1b\\", "\\x1bP+q\\x1b\\"),  # DCS
        ("\x9b31m", "\\x9b31m"),  # C1 CSI
        ("a\rb\x7f", "a\\x0db\\x7f"),
        ("evil\u202egnp.exe", "evil\\u202egnp.exe"),
        (b"\xff\x1b[2J", "\ufffd\\x1b[2J"),
    ],
)
def test_controls_become_visible(raw, shown):
    assert for_terminal(raw) == shown


def test_one_line_escapes_newlines():
    assert for_terminal("3.23.6\nHint: run rm -rf", one_line=True) == "3.23.6\\x0aHint: run rm -rf"
