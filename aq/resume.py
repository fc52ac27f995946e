"""The resume branch of `aq start`: a stopped VM that holds a saved state wakes up.

  choose   is there a saved state, and can it be used? If not, it is discarded and the
           history says "cold boot (saved state discarded: REASON)".
  resume   QEMU starts with the boot's own recorded argv plus `-incoming defer`, loads
           the stream, continues; then the agent sets the clock to now and, for a
           clone of a live snapshot, gives the guest its own identity (aq.identity).

The caller (aq.power.start) runs this inside its bracket, so any failure kills QEMU
and records the abort; a stream QEMU refuses is discarded and the boot goes on cold.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from aq import lifecycle, machine, paths
from aq.errors import AqError
from aq.qemu import process
from aq.qemu.hostinfo import HostInfo
from aq.savedstate import Facts, SaveFailed, instantiate, load, problem
from aq.store.db import reading, writing
from aq.store.models import SavedState, Vm
from aq.vm import find

RESUMED = "resumed"


@dataclass(frozen=True)
class Plan:
    state_id: int
    path: Path
    owned: bool
    source_vm_id: int | None
    argv: list[str]


def _note(session, vm: Vm, detail: str) -> None:
    """A history row that changes no state (the VM stays booting)."""
    lifecycle.record(session, vm, "saved-state", vm.state, vm.state, detail)


def discard(vm_id: int, reason: str, note: bool = True, then: str = "") -> None:
    """Drop the VM's saved state (its file too when it owns it); say why in the history,
    and `then` how the VM boots instead (when its `start` event promised a resume)."""
    path = None
    with writing() as session:
        state = session.scalars(select(SavedState).where(SavedState.vm_id == vm_id)).first()
        vm = session.get(Vm, vm_id)
        if state is not None:
            if state.owned:
                path = Path(state.path)
            session.delete(state)
            if note and vm is not None:
                after = f"; {then}" if then else ""
                _note(session, vm, f"cold boot (saved state discarded: {reason}){after}")
    if path is not None:
        path.unlink(missing_ok=True)


def expected(name: str, host: HostInfo, binary: str, cold: bool) -> bool:
    """Whether this start should resume (the VM holds a saved state that can be used),
    read before the start owns the VM, for its `start` event; `choose` decides."""
    if cold:
        return False
    with reading() as session:
        vm = find(session, name)
        state = session.scalars(select(SavedState).where(SavedState.vm_id == vm.id)).first()
        return state is not None and problem(state, vm, _facts(host, binary)) is None


def _facts(host: HostInfo, binary: str) -> Facts:
    return Facts(binary, host.arch, host.accel)


def choose(
    vm: Vm, host: HostInfo, binary: str, cold: bool, then: str = ""
) -> tuple[Vm, Plan | None]:
    """The VM's record (its disk tidied, aq.snapshots.tidy) and the saved state to
    resume it from, or None (after discarding an unusable one; `then`: see discard)."""
    from aq import snapshots

    files = paths.vm_files(vm.name)
    files.saved_state_part.unlink(missing_ok=True)  # an interrupted suspend's leftovers
    snapshots.repair(vm.name)
    snapshots.tidy(vm.name)
    with writing() as session:
        vm = find(session, vm.name)
        session.refresh(vm, ["forwards"])
        state = session.scalars(select(SavedState).where(SavedState.vm_id == vm.id)).first()
        if state is None or Path(state.path) != files.saved_state:
            # a suspend killed after writing its file but before recording it
            files.saved_state.unlink(missing_ok=True)
        if state is None:
            return vm, None
        why = "--cold" if cold else problem(state, vm, _facts(host, binary))
        if why is None:
            argv = json.loads(state.argv)
            return vm, Plan(state.id, Path(state.path), state.owned, state.source_vm_id, argv)
    discard(vm.id, why, then=then)
    return vm, None


def consumed(vm_id: int, plan: Plan) -> None:
    """The guest runs again: its disk moves on, so the saved state is spent."""
    with writing() as session:
        state = session.get(SavedState, plan.state_id)
        if state is not None:
            session.delete(state)
    if plan.owned:
        plan.path.unlink(missing_ok=True)


def launch(vm: Vm, files: paths.VmFiles, host: HostInfo, binary: str, plan: Plan):
    """Start QEMU waiting for the stream, load it, continue; QEMU's identity.

    Raises SaveFailed when QEMU refuses the stream (the caller boots cold instead)."""
    from aq.qemu.monitor import Monitor, MonitorError

    machine.write_guest_files(vm, files)  # fw_cfg files must exist as at the boot
    current = machine.argv(vm, files, host)
    argv = [*instantiate(plan.argv, vm, files, binary, current), "-incoming", "defer"]
    try:
        ident = process.launch(argv, files.pidfile, files.cmdline, files.stderr)
    except process.LaunchError as err:
        raise SaveFailed(f"QEMU refused the saved command line: {err.message}") from None
    paths.restrict_to_owner(files.root)
    try:
        with Monitor(files.qmp, connect_timeout=10) as qmp:
            load(qmp, plan.path, lambda: process.is_alive(ident, files.pidfile))
            qmp.command("cont")
    except (SaveFailed, MonitorError) as err:
        process.kill(ident, files.pidfile)
        reason = err.reason if isinstance(err, SaveFailed) else err.message
        raise SaveFailed(f"QEMU could not load it: {reason}") from None
    return ident


def wake(vm: Vm, files: paths.VmFiles, plan: Plan, timeout: float) -> str:
    """After `cont`: clock (and, for a clone, identity) set through the agent."""
    from aq import identity

    deadline = time.monotonic() + timeout
    identity.wait_agent(files, deadline)
    if plan.source_vm_id == vm.id:
        identity.set_clock(files)
        return RESUMED
    reseeded = identity.reset(files, vm)
    return f"{RESUMED} from a live snapshot; new identity; {reseeded}"


def resume_error(reason: str) -> AqError:
    return AqError(f"the saved state could not be used: {reason}", hint="run `aq start` again")
