"""Stopping and removing VMs: running -> stopping -> stopped -> removed.

  stop    running -> stopping -> stopped: ACPI power button (QMP system_powerdown),
          then QMP quit, then SIGKILL, each fallback written into the history.
  remove  created/stopped -> removed; `force` stops a running VM first (as Lima's
          delete does), which is why removing lives with stopping.

The shutdown runs bracketed (aq.moves) between the stop and halt moves.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from aq import bootcopy, defaults, lifecycle, paths, reconcile, savedstate
from aq.errors import WrongState
from aq.lifecycle import State
from aq.moves import Outcome, bracket
from aq.qemu import process
from aq.store.db import reading, writing
from aq.store.models import Vm
from aq.vm import find


def _repair_snapshot(name: str) -> None:
    """Finish a snapshot whose aq process was killed (a VM it left paused continues;
    the snapshot it froze is kept), before the VM is stopped or removed."""
    from aq.snapshots import repair

    repair(name)


def _begin_stop(name: str) -> tuple[Vm, bool]:
    with writing() as session:
        vm = find(session, name)
        if vm.state in (State.CREATED, State.STOPPED):
            return vm, False
        if vm.state == State.STOPPING:
            raise WrongState(name, vm.state, "stop", hint="another aq process is stopping it")
        vm = lifecycle.transition(session, vm.id, "stop", None)
        return vm, True


def _powerdown(files: paths.VmFiles, ident: process.Identity, timeout: float) -> list[str]:
    """ACPI power button, then QMP quit, then SIGKILL; what was needed, in order."""
    from aq.qemu.monitor import Monitor, MonitorError

    steps = []
    try:
        with Monitor(files.qmp, connect_timeout=5) as qmp:
            qmp.command("system_powerdown")
        steps.append("ACPI power button pressed")
        if process.wait_gone(ident, timeout, files.pidfile):
            return [*steps, "guest powered off"]
        steps.append(f"no power-off within {timeout:.0f}s")
    except MonitorError as err:
        steps.append(f"QMP unavailable ({err.message})")
    try:
        with Monitor(files.qmp, connect_timeout=5) as qmp:
            qmp.command("quit")
        steps.append("fallback: QMP quit")
        if process.wait_gone(ident, 10, files.pidfile):
            return steps
    except MonitorError:
        steps.append("QMP quit failed")
    process.kill(ident, files.pidfile)
    return [*steps, "fallback: SIGKILL"]


def _refresh_boot_copy(files: paths.VmFiles, arch: str) -> str:
    """Before the power button: bring the copy of the guest's kernel up to date, so the
    next start can boot it directly (aq.bootcopy)."""
    from aq.guest import channel

    if not channel.ping(files, timeout=3.0):
        return "kernel copy not refreshed: the guest's agent did not answer"
    return bootcopy.refresh(files, arch)


def stop(name: str, force: bool = False, timeout: float = defaults.STOP_TIMEOUT) -> Outcome:
    """Shut the VM down (see module doc); `force` kills QEMU at once."""
    reconcile.reconcile(name)
    _repair_snapshot(name)
    vm, changed = _begin_stop(name)
    if not changed:
        return Outcome(vm, False, f"{name} is already {vm.state}")
    files = paths.vm_files(name)
    ident = process.Identity(vm.pid, vm.pid_started) if vm.pid and vm.pid_started else None

    def kill() -> None:
        if ident is not None:
            process.kill(ident, files.pidfile)

    with bracket(vm.id, State.STOPPING, "halt", kill, "stop") as move:
        if ident is None or not process.is_alive(ident, files.pidfile):
            steps = ["QEMU was not running"]
        elif force:
            process.kill(ident, files.pidfile)
            steps = ["killed (--force)"]
        else:
            steps = [_refresh_boot_copy(files, vm.arch), *_powerdown(files, ident, timeout)]
        vm = move.finish("halt", "; ".join(steps))
    files.pidfile.unlink(missing_ok=True)
    return Outcome(vm, True, f"{name} stopped ({steps[-1]})")


def remove(name: str, force: bool = False) -> Vm:
    """Record the VM as removed and delete its files; `force` stops a running VM first.

    Inside the write transaction that records the removal, the VM's folder is renamed
    to a tombstone no name can reach; only then is it deleted. So an `aq new` of the
    same name, which takes the write lock to make its folder, can never have that new
    folder deleted by this removal.
    """
    reconcile.reconcile(name)
    _repair_snapshot(name)
    if force:
        with reading() as session:
            state = find(session, name).state
        if state in (State.BOOTING, State.RUNNING):
            stop(name, force=True)
    folder = paths.vm_files(name).root
    tomb: Path | None = None
    try:
        with writing() as session:
            vm = find(session, name)
            if vm.state not in (State.CREATED, State.STOPPED):
                raise WrongState(
                    name,
                    vm.state,
                    "remove",
                    hint=f"stop it first (`aq stop {name}`) or use --force",
                )
            ports = ", ".join(f"{f.host_port}->{f.guest_port}/{f.protocol}" for f in vm.forwards)
            vm.forwards.clear()
            savedstate.forget_vm(session, vm.id)
            session.flush()
            vm = lifecycle.transition(session, vm.id, "remove", f"ports released: {ports}")
            tomb = bury(folder, vm.id)
    except BaseException:
        if tomb is not None:  # not recorded as removed: the folder is still the VM's
            tomb.rename(folder)
        raise
    if tomb is not None:
        _delete(tomb)
    return vm


def _delete(tomb: Path) -> None:
    shutil.rmtree(tomb, ignore_errors=True)


def bury(folder: Path, vm_id: int) -> Path | None:
    """Rename `folder` to a fresh tombstone, or None if there is no folder.

    Called while holding the write lock, so no `aq new` can be making `folder` then.
    """
    tomb = paths.tombstone(vm_id, uuid.uuid4().hex[:8])
    try:
        folder.rename(tomb)
    except FileNotFoundError:
        return None
    return tomb
