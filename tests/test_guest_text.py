"""Guest text that aq prints itself reaches the terminal with no escape sequence intact."""

from __future__ import annotations

from pathlib import Path

import pytest

from aq import ssh
from aq.console import expect
from aq.errors import AqError
from aq.guest import channel
from aq.paths import VmFiles

HOSTILE = b"boot\r\n\x1b]52;c;cHduZWQ=\x07\x1bP+q\x1b\\\x1b]0;title\x07\x9b2J\xe2\x80\xaeevil\n"


def test_console_tail_shows_escapes_escaped(tmp_path: Path) -> None:
    transcript = tmp_path / "console.log"
    transcript.write_bytes(b"line one\n" + HOSTILE)
    tail = expect.transcript_tail(transcript)
    assert "line one" in tail and "evil" in tail
    for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert raw not in tail
    assert "\\x1b]52;c;" in tail


@pytest.mark.parametrize(
    "answer", [b"ssh-ed25519 \x1b]0;x\x07 root@vm\n", b"\x1b]52;c;eA==\x07 AAAA\n", b"\xff\xfe\n"]
)
def test_a_malformed_host_key_is_refused_safely(tmp_path, monkeypatch, answer) -> None:
    monkeypatch.setattr(channel, "capture", lambda *a, **k: (0, answer, b""))
    with pytest.raises(AqError, match="host key is malformed") as raised:
        ssh.read_host_key(VmFiles(tmp_path))
    assert "\x1b" not in raised.value.one_line() and "\x07" not in raised.value.one_line()


def test_a_good_host_key_is_read(tmp_path, monkeypatch) -> None:
    key = b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKm root@guest\n"
    monkeypatch.setattr(channel, "capture", lambda *a, **k: (0, key, b""))
    assert ssh.read_host_key(VmFiles(tmp_path)) == key.decode().strip()


def test_authorize_errors_are_escaped(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(channel, "capture", lambda *a, **k: (1, b"", b"no\x1b]0;x\x07\nway"))
    with pytest.raises(AqError) as raised:
        ssh.authorize(VmFiles(tmp_path), "ssh-ed25519 AAAA aq")
    assert "\x1b" not in raised.value.one_line() and "\n" not in raised.value.one_line()
