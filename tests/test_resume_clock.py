"""A resumed guest's clock: set with the agent's one-line `T` (a whole exec costs
seconds under TCG), and with an exec when the agent is older than `T`. The agent here
is a stand-in on slot 0's control socket (tests/control_stub.py)."""

from __future__ import annotations

import time

from aq import identity
from aq.guest import channel
from aq.paths import VmFiles
from tests.control_stub import control_socket


def test_clock_is_one_control_line(tmp_path, monkeypatch) -> None:
    files, heard = control_socket(tmp_path / "vm", answer=0)
    execs: list[list[str]] = []
    monkeypatch.setattr(identity, "_run", lambda files, argv, *rest: execs.append(argv))
    before = int(time.time())
    identity.set_clock(files)
    kind, epoch = heard[0].split()
    assert kind == "T" and before <= int(epoch) <= time.time()
    assert execs == []


def test_an_agent_without_t_gets_an_exec(tmp_path, monkeypatch) -> None:
    files, heard = control_socket(tmp_path / "vm", answer=None)
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
