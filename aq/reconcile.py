"""Making the store tell the truth about the running world before any command uses it.

For each VM the store believes is booting, running or stopping: is its recorded QEMU
still alive and still that VM's QEMU (a reused pid is not)? Is the aq process that was
booting or stopping it still alive? A VM whose QEMU died is recorded as stopped with
the reason "crashed"; a boot or stop whose aq process died is finished (QEMU stopped)
so that nothing stays stuck in booting or stopping. Every verdict leads to stopped,
whose ON_ENTRY (aq.lifecycle) clears the pid and owner columns.
"""

from __future__ import annotations

from sqlalchemy import select

from aq import lifecycle, paths
from aq.lifecycle import State
from aq.store.db import reading, writing
from aq.store.models import Vm

ACTIVE = (State.BOOTING.value, State.RUNNING.value, State.STOPPING.value)


def _verdict(vm: Vm) -> tuple[str, str] | None:
    """(event, reason) that makes `vm`'s record true, or None if it already is."""
    from aq.qemu import process

    files = paths.vm_files(vm.name)
    qemu = process.Identity(vm.pid, vm.pid_started) if vm.pid and vm.pid_started else None
    qemu_alive = process.is_alive(qemu, files.pidfile)
    owner = (
        process.Identity(vm.owner_pid, vm.owner_started)
        if vm.owner_pid and vm.owner_started
        else None
    )
    owner_alive = process.is_alive(owner)
    if vm.state == State.RUNNING:
        if not qemu_alive:
            return "crash", f"crashed: QEMU (pid {vm.pid}) is gone"
        return None
    if owner_alive:
        return None  # an aq process is booting or stopping it right now
    who = f"aq (pid {vm.owner_pid})" if vm.owner_pid else "aq"
    if vm.state == State.BOOTING:
        if qemu_alive:
            assert qemu is not None
            process.kill(qemu, files.pidfile)
            return (
                "abort",
                f"boot interrupted: {who} exited before the guest was ready; QEMU killed",
            )
        if vm.pid:
            return "crash", f"crashed: QEMU (pid {vm.pid}) died during boot and {who} exited"
        # aq may have died between launching QEMU and recording its pid: the pid file
        # (checked to name this VM's pid file) is then the only trace of that QEMU.
        unrecorded = process.from_pidfile(files.pidfile)
        if unrecorded is not None:
            process.kill(unrecorded, files.pidfile)
            return (
                "abort",
                f"boot interrupted: {who} exited before recording QEMU's pid "
                f"{unrecorded.pid}; QEMU killed",
            )
        return "abort", f"boot interrupted: {who} exited before QEMU started"
    # stopping
    if qemu_alive:
        assert qemu is not None
        process.kill(qemu, files.pidfile)
        return "halt", f"stop interrupted: {who} exited; QEMU killed"
    return "halt", f"stop completed; {who} exited before recording it"


def reconcile(name: str | None = None) -> int:
    """Correct the records of VMs (all, or the one called `name`); return how many."""
    with reading() as session:
        query = select(Vm).where(Vm.state.in_(ACTIVE))
        if name is not None:
            query = query.where(Vm.name == name)
        candidates = list(session.scalars(query))
    fixed = 0
    for vm in candidates:
        verdict = _verdict(vm)
        if verdict is None:
            continue
        event, reason = verdict
        with writing() as session:
            current = session.get(Vm, vm.id)
            # Compare and set: act only if nobody changed the VM since we looked.
            if current is None or (current.state, current.pid, current.owner_pid) != (
                vm.state,
                vm.pid,
                vm.owner_pid,
            ):
                continue
            lifecycle.transition(session, vm.id, event, reason)
            fixed += 1
        paths.vm_files(vm.name).pidfile.unlink(missing_ok=True)
    return fixed
