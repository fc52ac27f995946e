"""The VM state machine: its states and moves as one table, and persisted transitions.

Beside the table: what entering each state implies for the other columns (ON_ENTER),
applied by every move. `aq.moves.bracket` frames a QEMU action between its transitions
(start ... ready, or abort on any failure) without holding the write lock meanwhile.

Only the moves declared below exist (the `transitions` library with auto_transitions off).
A transition is one write transaction: it reads the state stored now, checks the move
is declared, updates the row only if the state is still the one it read (compare and
set) and appends the event row; so two processes can never both make the same move.
"""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from aq.errors import NotFound, WrongState
from aq.store.models import Event, Vm, utcnow


class State(StrEnum):
    CREATED = "created"
    BOOTING = "booting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    REMOVED = "removed"


S = State
# fmt: off
TRANSITIONS: list[tuple[str, list[State], State]] = [
    # event      from                                 to
    ("start",    [S.CREATED, S.STOPPED],              S.BOOTING),   # QEMU launched
    ("ready",    [S.BOOTING],                         S.RUNNING),   # guest answers
    ("abort",    [S.BOOTING],                         S.STOPPED),   # boot failed, QEMU stopped
    ("stop",     [S.BOOTING, S.RUNNING],              S.STOPPING),  # shutdown requested
    ("halt",     [S.STOPPING],                        S.STOPPED),   # QEMU has exited
    ("crash",    [S.BOOTING, S.RUNNING, S.STOPPING],  S.STOPPED),   # QEMU died on its own
    ("remove",   [S.CREATED, S.STOPPED],              S.REMOVED),   # files deleted; terminal
]
# fmt: on

# What entering each state implies for the VM's other columns, applied by every move
# (and only here). OWNER means "the aq process making the move": a booting or stopping
# VM names the aq at work, so a killed aq is noticed (aq.reconcile); `pid` is QEMU's.
OWNER = object()
_NO_QEMU = {"pid": None, "pid_started": None}
_NO_OWNER = {"owner_pid": None, "owner_started": None}
ON_ENTER: dict[State, dict[str, Any]] = {
    S.BOOTING: {**_NO_QEMU, "owner": OWNER},  # QEMU's pid follows once it is launched
    S.RUNNING: {**_NO_OWNER},
    S.STOPPING: {"owner": OWNER},
    S.STOPPED: {**_NO_QEMU, **_NO_OWNER},
    S.REMOVED: {**_NO_QEMU, **_NO_OWNER},
}

# What a user calls each event when it is refused, for messages such as
# "cannot start VM 'web': it is running".
ACTIONS = {"ready": "mark ready", "abort": "abort the boot of", "halt": "halt"}

# The event recorded when a VM is created; it has no from-state.
CREATE_EVENT = "create"

_machine: Any = None


def _get_machine() -> Any:
    """The table as a `transitions` machine, built once and only queried (no model)."""
    global _machine
    if _machine is None:
        from transitions import Machine

        _machine = Machine(
            model=None,
            states=State,
            transitions=[
                {"trigger": event, "source": list(sources), "dest": dest}
                for event, sources, dest in TRANSITIONS
            ],
            auto_transitions=False,
            initial=State.CREATED,
        )
    return _machine


def next_state(current: State | str, event: str) -> State | None:
    """The state `event` leads to from `current`, or None if the move is not declared."""
    try:
        source = State(current).name  # the machine names Enum states by member name
    except ValueError:
        return None
    moves = _get_machine().get_transitions(trigger=event, source=source)
    return State[moves[0].dest] if moves else None


def _entering(target: State) -> dict[str, Any]:
    columns = dict(ON_ENTER.get(target, {}))
    if columns.pop("owner", None) is OWNER:
        from aq.qemu.process import identity

        me = identity(os.getpid())
        assert me is not None
        columns.update(owner_pid=me.pid, owner_started=me.started)
    return columns


def record(session: Session, vm: Vm, event: str, frm: str | None, to: str, detail: str | None):
    """Append one history row in the caller's transaction."""
    session.add(
        Event(
            vm_id=vm.id,
            event=event,
            from_state=frm,
            to_state=to,
            at=utcnow(),
            pid=os.getpid(),
            detail=detail,
        )
    )


def transition(
    session: Session, vm_id: int, event: str, detail: str | None = None, **changes: Any
) -> Vm:
    """Move VM `vm_id` by `event` inside the caller's write transaction.

    The columns ON_ENTER names for the new state are set in the same UPDATE, then
    `changes` (accel, ...). Raises WrongState naming the state found when the
    move is not allowed from it.
    """
    vm = session.execute(select(Vm).where(Vm.id == vm_id)).scalar_one_or_none()
    if vm is None:
        raise NotFound(f"no VM with id {vm_id}")
    session.refresh(vm)
    found = vm.state
    target = next_state(found, event)
    if target is None:
        raise WrongState(vm.name, found, ACTIONS.get(event, event))
    result = session.execute(
        update(Vm)
        .where(Vm.id == vm.id, Vm.state == found)
        .values(state=target.value, updated_at=utcnow(), **{**_entering(target), **changes})
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # pragma: no cover - the write lock makes this unreachable
        raise WrongState(vm.name, "changed by another process", ACTIONS.get(event, event))
    record(session, vm, event, found, target.value, detail)
    session.refresh(vm)
    return vm
