"""One QEMU action bracketed between the transitions that begin and end it.

The state machine's moves are short write transactions; a QEMU action (launching it,
powering it down) can take minutes and must not hold SQLite's write lock. So an action
runs between two moves: the caller has made the begin move (start, stop, ...) and
`bracket` yields; the action ends with `Move.finish` (ready, halt, ...), and any
exception instead runs the undo (kill QEMU) and records the failure move with the
reason before it propagates. Start and stop use it; suspend and snapshot will too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aq import lifecycle
from aq.lifecycle import State
from aq.store.db import writing
from aq.store.models import Vm


class Move:
    """An action in progress on VM `vm_id`, begun in state `during`."""

    def __init__(self, vm_id: int, during: State) -> None:
        self.vm_id = vm_id
        self.during = during
        self.finished = False

    def finish(self, event: str, detail: str | None, **changes: Any) -> Vm:
        """Record the move that ends the action (one short write transaction)."""
        with writing() as session:
            vm = lifecycle.transition(session, self.vm_id, event, detail, **changes)
        self.finished = True
        return vm


@dataclass(frozen=True)
class Outcome:
    """What an operation did, for the CLI to print."""

    vm: Vm
    changed: bool
    message: str


def _detail(err: BaseException, what: str) -> str:
    reason = getattr(err, "reason", None)
    if reason:
        return reason
    if isinstance(err, KeyboardInterrupt):
        return f"{what} interrupted"
    return f"{what} failed: {err}"


@contextmanager
def bracket(
    vm_id: int, during: State, failure: str, undo: Callable[[], None], what: str
) -> Iterator[Move]:
    """Run the caller's action; on any exception undo it and record `failure`.

    The failure move is recorded only if the VM is still in `during` (reconcile or
    another process may have moved it meanwhile); its detail is the exception's
    `reason` attribute when it has one, else "<what> failed: <error>".
    """
    move = Move(vm_id, during)
    try:
        yield move
    except BaseException as err:
        if not move.finished:
            undo()
            with writing() as session:
                vm = session.get(Vm, vm_id)
                if vm is not None and vm.state == during:
                    lifecycle.transition(session, vm_id, failure, _detail(err, what))
        raise
