"""QMP sessions have deadlines: a QEMU whose socket accepts but never speaks, or greets
and then never answers, must not hang `aq status` / `aq ls`."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from aq.paths import short_socket_path
from aq.qemu import monitor

GREETING = {
    "QMP": {
        "version": {"qemu": {"micro": 0, "minor": 2, "major": 8}, "package": ""},
        "capabilities": [],
    }
}


def _server(path: Path, behaviour) -> tuple[socket.socket, threading.Event]:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(short_socket_path(path))
    listener.listen(8)
    stop = threading.Event()

    def serve() -> None:
        conns = []
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            conns.append(conn)
            threading.Thread(target=behaviour, args=(conn, stop), daemon=True).start()
        for conn in conns:
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener, stop


def _silent(conn: socket.socket, stop: threading.Event) -> None:
    stop.wait(30)


def _requests(conn: socket.socket):
    """QMP requests as they come (qemu.qmp sends JSON objects with no newline)."""
    decoder = json.JSONDecoder()
    buffer = ""
    while data := conn.recv(4096):
        buffer += data.decode()
        while buffer.strip():
            try:
                request, end = decoder.raw_decode(buffer.lstrip())
            except json.JSONDecodeError:
                break
            buffer = buffer.lstrip()[end:]
            yield request


def _greets_then_ignores_commands(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(json.dumps(GREETING).encode() + b"\r\n")
    first = next(_requests(conn))
    assert first["execute"] == "qmp_capabilities"
    conn.sendall(json.dumps({"return": {}, "id": first.get("id")}).encode() + b"\r\n")
    stop.wait(30)  # and never answers query-status


def _answers(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(json.dumps(GREETING).encode() + b"\r\n")
    for request in _requests(conn):
        answer = {"status": "running", "running": True}
        if request["execute"] == "qmp_capabilities":
            answer = {}
        conn.sendall(json.dumps({"return": answer, "id": request.get("id")}).encode() + b"\r\n")


@pytest.mark.parametrize("behaviour", [_silent, _greets_then_ignores_commands])
def test_a_wedged_qemu_does_not_hang_query_status(tmp_path: Path, behaviour) -> None:
    listener, stop = _server(tmp_path / "qmp.sock", behaviour)
    started = time.monotonic()
    assert monitor.query_status(tmp_path / "qmp.sock") is None
    elapsed = time.monotonic() - started
    stop.set()
    listener.close()
    assert elapsed < 6, elapsed


def test_a_silent_monitor_is_a_one_line_error(tmp_path: Path) -> None:
    listener, stop = _server(tmp_path / "qmp.sock", _silent)
    started = time.monotonic()
    with (
        pytest.raises(monitor.MonitorError, match="no answer in time") as raised,
        monitor.Monitor(tmp_path / "qmp.sock", connect_timeout=1.5),
    ):
        pass
    assert time.monotonic() - started < 4
    assert "\n" not in raised.value.one_line()
    stop.set()
    listener.close()


def test_a_healthy_monitor_answers(tmp_path: Path) -> None:
    listener, stop = _server(tmp_path / "qmp.sock", _answers)
    assert monitor.query_status(tmp_path / "qmp.sock") == "running"
    stop.set()
    listener.close()
