"""A resumed guest's clock: set with the agent's one-line `T` (a whole exec costs
seconds under TCG), and with an exec when the agent is older than `T`. The agent here
is a stand-in listening on slot 0's control socket as QEMU does."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from aq import identity
from aq.guest import channel
from aq.paths import VmFiles, short_socket_path


def _agent(root: Path, answers: bool) -> tuple[VmFiles, list[str]]:
    """Slot 0's control socket; each line it gets is kept, and echoed if `answers`."""
    root.mkdir(parents=True, exist_ok=True)
    files = VmFiles(root)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(short_socket_path(files.exec_socket(0, "ctl")))
    listener.listen(1)
    heard: list[str] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            line = conn.makefile().readline().strip()
            heard.append(line)
            if answers:
                conn.sendall(f"{line}\n".encode())
            else:
                time.sleep(5)

    threading.Thread(target=serve, daemon=True).start()
    return files, heard


def test_clock_is_one_control_line(tmp_path, monkeypatch) -> None:
    files, heard = _agent(tmp_path / "vm", answers=True)
    execs: list[list[str]] = []
    monkeypatch.setattr(identity, "_run", lambda files, argv, *rest: execs.append(argv))
    before = int(time.time())
    identity.set_clock(files)
    kind, epoch = heard[0].split()
    assert kind == "T" and before <= int(epoch) <= time.time()
    assert execs == []


def test_an_agent_without_t_gets_an_exec(tmp_path, monkeypatch) -> None:
    files, heard = _agent(tmp_path / "vm", answers=False)
    execs: list[list[str]] = []
    monkeypatch.setattr(identity, "_run", lambda files, argv, *rest: execs.append(argv))
    started = time.monotonic()
    identity.set_clock(files)
    assert heard[0].startswith("T ")
    assert time.monotonic() - started < 4.5  # waited for `T` 3 s at most
    assert execs and execs[0][:3] == ["sh", "-c", identity.CLOCK]


def test_set_clock_false_when_nothing_listens(tmp_path) -> None:
    files = VmFiles(tmp_path / "vm")
    (tmp_path / "vm").mkdir()
    assert channel.set_clock(files, 1, timeout=0.5) is False
