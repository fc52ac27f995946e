"""The state machine: every declared move, every forbidden one, and persistence."""

from __future__ import annotations

import multiprocessing
import sqlite3

import pytest
from sqlalchemy import select

from aq import lifecycle, vm
from aq.errors import WrongState
from aq.lifecycle import State
from aq.store.db import reading, writing
from aq.store.models import Event

# Written out by hand, independent of lifecycle.TRANSITIONS, so a change to the
# table shows up here as a failing test rather than passing silently.
EXPECTED = {
    ("created", "start"): "booting",
    ("stopped", "start"): "booting",
    ("booting", "ready"): "running",
    ("booting", "abort"): "stopped",
    ("booting", "stop"): "stopping",
    ("running", "stop"): "stopping",
    ("stopping", "halt"): "stopped",
    ("booting", "crash"): "stopped",
    ("running", "crash"): "stopped",
    ("stopping", "crash"): "stopped",
    ("created", "remove"): "removed",
    ("stopped", "remove"): "removed",
}
EVENTS = sorted({event for _, event in EXPECTED} | {"create", "restart", "resume"})
ALL_PAIRS = [(state.value, event) for state in State for event in EVENTS]


@pytest.mark.parametrize(("state", "event"), ALL_PAIRS)
def test_every_move_is_declared_or_refused(state: str, event: str) -> None:
    expected = EXPECTED.get((state, event))
    assert lifecycle.next_state(state, event) == expected


def test_removed_is_terminal() -> None:
    assert all(lifecycle.next_state("removed", e) is None for e in EVENTS)


def _put_in_state(vm_id: int, path: list[str]) -> None:
    with writing() as session:
        for event in path:
            lifecycle.transition(session, vm_id, event, detail=f"test {event}")


PATHS = {
    "created": [],
    "booting": ["start"],
    "running": ["start", "ready"],
    "stopping": ["start", "ready", "stop"],
    "stopped": ["start", "abort"],
}


@pytest.mark.parametrize(("state", "event"), [p for p in ALL_PAIRS if p[0] != "removed"])
def test_persisted_transition(base_image, state: str, event: str) -> None:
    made = vm.create(vm.NewVm(name="t"), base_image)
    _put_in_state(made.id, PATHS[state])
    expected = EXPECTED.get((state, event))
    with writing() as session:
        if expected is None:
            with pytest.raises(WrongState) as err:
                lifecycle.transition(session, made.id, event)
            assert err.value.state == state
            assert state in err.value.message
        else:
            moved = lifecycle.transition(session, made.id, event, detail="why")
            assert moved.state == expected
    with reading() as session:
        events = session.scalars(select(Event).where(Event.vm_id == made.id).order_by(Event.id))
        last = list(events)[-1]
    if expected is None:
        assert last.to_state == state  # nothing was appended by the refused move
    else:
        assert (last.event, last.from_state, last.to_state, last.detail) == (
            event,
            state,
            expected,
            "why",
        )


def test_history_is_append_only(base_image) -> None:
    made = vm.create(vm.NewVm(name="t"), base_image)
    from aq import paths

    con = sqlite3.connect(paths.db_path())
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        con.execute("UPDATE events SET detail = 'x' WHERE vm_id = ?", (made.id,))
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        con.execute("DELETE FROM events")
    con.close()


def _race_start(home: str, vm_id: int, barrier, results) -> None:
    import os

    os.environ["AQ_HOME"] = home
    barrier.wait()
    try:
        with writing() as session:
            lifecycle.transition(session, vm_id, "start", detail=f"pid {os.getpid()}")
        results.put("won")
    except WrongState as err:
        results.put(f"lost:{err.state}")


def test_compare_and_set_race_two_processes(base_image, aq_home) -> None:
    made = vm.create(vm.NewVm(name="race"), base_image)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_race_start, args=(str(aq_home), made.id, barrier, results))
        for _ in range(2)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    assert outcomes == ["lost:booting", "won"]
    with reading() as session:
        starts = session.scalars(
            select(Event).where(Event.vm_id == made.id, Event.event == "start")
        ).all()
    assert len(starts) == 1
