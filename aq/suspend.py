"""`aq suspend`: save a running VM's memory and stop it (running -> stopping -> stopped).

The VM is paused, its state written with QEMU's migration to saved.state.part, QEMU
quits, and only then, in one transaction, the VM is recorded as stopped together with
its saved state (file renamed into place first). So an aq or QEMU killed at any point
leaves at most an unrecorded .part file (removed by the next start) and a VM that
reconcile records as stopped: a saved state is never recorded unless it is complete
and matches the disk as QEMU left it.
"""

from __future__ import annotations

from aq import lifecycle, paths, reconcile, savedstate
from aq.errors import WrongState
from aq.lifecycle import State
from aq.moves import Outcome, bracket
from aq.qemu import process
from aq.statelock import exclusive
from aq.store.db import writing
from aq.store.models import Vm
from aq.units import format_size
from aq.vm import find


def _begin(name: str) -> Vm:
    with writing() as session:
        vm = find(session, name)
        if vm.state != State.RUNNING:
            stopped = vm.state in (State.CREATED, State.STOPPED)
            hint = f"start it first (`aq start {name}`)" if stopped else None
            raise WrongState(name, vm.state, "suspend", hint=hint)
        return lifecycle.transition(session, vm.id, "stop", "suspend: saving memory")


def suspend(name: str) -> Outcome:
    """Save the running VM's memory and device state, then stop its QEMU."""
    from aq.qemu.monitor import Monitor

    reconcile.reconcile(name)
    files = paths.vm_files(name)
    with exclusive(files, name, "suspend"):
        from aq.snapshots import repair

        repair(name)
        vm = _begin(name)
        assert vm.pid and vm.pid_started
        ident = process.Identity(vm.pid, vm.pid_started)
        part = files.saved_state_part

        def undo() -> None:
            process.kill(ident, files.pidfile)
            part.unlink(missing_ok=True)

        with bracket(vm.id, State.STOPPING, "halt", undo, "suspend") as move:
            argv = savedstate.running_argv(ident.pid, files)
            with Monitor(files.qmp, connect_timeout=5, command_timeout=30) as qmp:
                version, machine = savedstate.capture_facts(qmp)
                qmp.command("stop")
                alive = lambda: process.is_alive(ident, files.pidfile)  # noqa: E731
                size = savedstate.save(qmp, part, vm.memory_mib, alive)
                qmp.command("quit")
            if not process.wait_gone(ident, 30, files.pidfile):
                process.kill(ident, files.pidfile)
            part.replace(files.saved_state)
            with writing() as session:
                current = session.get(Vm, vm.id)
                assert current is not None
                savedstate.forget_vm(session, vm.id)
                record = savedstate.new_record(
                    path=files.saved_state,
                    size=size,
                    owned=True,
                    version=version,
                    machine=machine,
                    accel=vm.accel or "tcg",
                    vm=current,
                    argv=savedstate.template(argv, current, files),
                    disk=savedstate.disk_identity(current),
                )
                record.vm_id = vm.id
                session.add(record)
                detail = f"suspended: memory saved ({format_size(size)})"
                vm = lifecycle.transition(session, vm.id, "halt", detail)
                move.finished = True
    files.pidfile.unlink(missing_ok=True)
    return Outcome(vm, True, f"{name} suspended ({format_size(size)} saved)")
