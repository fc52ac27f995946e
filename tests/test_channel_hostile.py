"""The command channel against a hostile scripted guest: floods are refused fast and
bounded, and an agent that cannot start a command makes aq fail at once, not hang."""

from __future__ import annotations

import contextlib
import io
import socket
import time
from pathlib import Path

import pytest

from aq.guest import channel, wire
from tests.test_channel import FakeGuest, _accept_session, _read_line


def _then(action):
    """An agent that accepts the session, then does `action(conns)` (the host may hang up)."""

    def agent(conns: dict[str, socket.socket]) -> None:
        _accept_session(conns, _read_line(conns["ctl"]))
        with contextlib.suppress(OSError):
            action(conns)

    return agent


def _run(guest: FakeGuest, timeout: float = 30) -> int:
    options = channel.ExecOptions(None, io.BytesIO(), io.BytesIO(), timeout=timeout)
    return channel.run(guest.files, ["true"], options)


def test_an_agent_that_cannot_start_the_command_fails_at_once(aq_home: Path) -> None:
    reason = b"F no work folder: mktemp: \x1b]0;pwned\x07Read-only file system\n"
    guest = FakeGuest(aq_home / "vm", _then(lambda conns: conns["ctl"].sendall(reason)))
    started = time.monotonic()
    with pytest.raises(channel.ChannelError) as raised:
        _run(guest)
    assert time.monotonic() - started < 5
    guest.close()
    text = raised.value.one_line()
    assert "could not start the command" in text and "Read-only file system" in text
    assert "\x1b" not in text and "\x07" not in text
    assert raised.value.exit_code == 255  # from aq cp too, as from aq exec


def test_a_64_mib_control_line_is_refused_fast(aq_home: Path) -> None:
    def flood(conns: dict[str, socket.socket]) -> None:
        block = b"x" * (1 << 20)
        for _ in range(64):
            conns["ctl"].sendall(block)

    guest = FakeGuest(aq_home / "vm", _then(flood))
    started = time.monotonic()
    with pytest.raises(channel.ChannelError, match="control line longer than 4096"):
        _run(guest)
    elapsed = time.monotonic() - started
    guest.close()
    print(f"64 MiB control line refused after {elapsed:.3f}s")
    assert elapsed < 2


def test_a_long_line_reader_scans_each_byte_once(aq_home: Path) -> None:
    """Many small reads of one long line: linear, not quadratic (a 4 KiB line in 1-byte
    recvs, then lines split over reads still come out whole)."""
    left, right = socket.socketpair()
    reader = wire.LineReader(right)
    for piece in (b"R 0", b" 1", b"2 3\nP ab", b"c\n"):
        left.sendall(piece)
        reader.feed()
    assert list(reader.lines()) == ["R 0 12 3", "P abc"]
    left.sendall(b"y" * (wire.LINE_MAX + 1))
    while len(reader.buffer) <= wire.LINE_MAX:
        reader.feed()
    with pytest.raises(channel.ChannelError):
        list(reader.lines())
    left.close()
    right.close()


def test_capture_is_bounded(aq_home: Path) -> None:
    def huge(conns: dict[str, socket.socket]) -> None:
        block = b"y" * (1 << 20)
        for _ in range(1024):  # 1 GiB, if nobody stops it
            conns["out"].sendall(block)

    guest = FakeGuest(aq_home / "vm", _then(huge))
    started = time.monotonic()
    with pytest.raises(channel.ChannelError, match="exceeded 1048576 bytes"):
        channel.capture(guest.files, ["yes"], timeout=30)
    assert time.monotonic() - started < 10
    guest.close()


def test_garbage_before_the_session_marker_is_bounded(aq_home: Path, monkeypatch) -> None:
    monkeypatch.setattr(wire, "STALE_MAX", 1 << 20)

    def agent(conns: dict[str, socket.socket]) -> None:
        _read_line(conns["ctl"])
        with contextlib.suppress(OSError):
            for _ in range(64):
                conns["out"].sendall(b"z" * (1 << 20))

    guest = FakeGuest(aq_home / "vm", agent)
    with pytest.raises(channel.ChannelError, match="before the session began"):
        _run(guest)
    guest.close()


def test_a_malformed_result_is_an_error(aq_home: Path) -> None:
    guest = FakeGuest(aq_home / "vm", _then(lambda conns: conns["ctl"].sendall(b"R x\x1b[2J\n")))
    with pytest.raises(channel.ChannelError, match="malformed result"):
        _run(guest)
    guest.close()
