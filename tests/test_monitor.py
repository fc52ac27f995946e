"""QMP sessions are bounded in time: a silent or wedged monitor cannot hang aq."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from aq.qemu.monitor import Monitor, MonitorError, query_status


def _silent_server(path: Path) -> socket.socket:
    """Accepts connections and never says a word, like a wedged QEMU."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(8)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    return server


def test_a_silent_monitor_is_an_error_within_the_deadline(tmp_path: Path) -> None:
    server = _silent_server(tmp_path / "qmp.sock")
    try:
        began = time.monotonic()
        with (
            pytest.raises(MonitorError, match="did not answer in time"),
            Monitor(tmp_path / "qmp.sock", connect_timeout=1.5),
        ):
            pass
        assert time.monotonic() - began < 5
        began = time.monotonic()
        assert query_status(tmp_path / "qmp.sock") is None
        assert time.monotonic() - began < 5
    finally:
        server.close()


def test_no_socket_is_an_error_within_the_deadline(tmp_path: Path) -> None:
    began = time.monotonic()
    with pytest.raises(MonitorError), Monitor(tmp_path / "absent.sock", connect_timeout=0.5):
        pass
    assert time.monotonic() - began < 3


def test_a_real_qemu_answers(tmp_path: Path) -> None:
    sock = tmp_path / "qmp.sock"
    proc = subprocess.Popen(
        [
            "qemu-system-x86_64",
            "-machine",
            "none",
            "-display",
            "none",
            "-nodefaults",
            "-S",
            "-qmp",
            f"unix:{sock},server=on,wait=off",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with Monitor(sock, connect_timeout=10) as qmp:
            assert qmp.command("query-status")["status"] == "prelaunch"
            qmp.command("quit")
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
