"""Starting VMs: the state machine meets QEMU.

  start   created/stopped -> booting (QEMU launched, daemonized) -> running (the guest's
          command channel answers; the boot's duration goes into the history); a failed or
          timed-out boot stops QEMU and records booting -> stopped with the reason.

The launch runs bracketed (aq.moves) between the start and ready moves. Stopping and
removing live in aq.stopping (re-exported here). Every command first reconciles the
store with reality (aq.reconcile).
"""

from __future__ import annotations

import os
import time

from aq import (
    alloc,
    bootcopy,
    boottime,
    defaults,
    lifecycle,
    machine,
    paths,
    readiness,
    reconcile,
    resume,
)
from aq.console.expect import transcript_tail
from aq.errors import AqError, Conflict, GuestTimeout, NotFound, WrongState
from aq.lifecycle import State
from aq.moves import Outcome, bracket
from aq.progress import Progress
from aq.qemu import process
from aq.qemu.hostinfo import HostInfo, detect, qemu_binary
from aq.readiness import BootFailed
from aq.store.db import reading, writing
from aq.store.models import Vm
from aq.vm import find

CONSOLE_LOG_MAX = 4 << 20  # bytes; see _console_offset


def _ensure_ports(session, vm: Vm) -> list[str]:
    """Check every forward's host port is free now; re-pick ports aq chose itself."""
    notes = []
    for fwd in vm.forwards:
        if alloc.port_is_free(fwd.host_addr, fwd.host_port, fwd.protocol):
            continue
        if not fwd.auto:
            raise Conflict(
                f"host port {fwd.host_addr}:{fwd.host_port}/{fwd.protocol} (to guest port "
                f"{fwd.guest_port}) is in use by another program",
                hint="stop that program, or recreate the VM with another -p HOST:GUEST",
            )
        old = fwd.host_port
        fwd.host_port = alloc.pick_port(
            session, fwd.host_addr, fwd.protocol, old + 1, exclude_vm=vm.id
        )
        notes.append(f"port {old} was taken, now {fwd.host_port}->{fwd.guest_port}")
    return notes


def _begin_start(name: str, host: HostInfo, boot_note: str) -> Vm:
    """booting, in one transaction: state checked, ports settled, owner recorded."""
    with writing() as session:
        vm = find(session, name)
        if vm.state == State.RUNNING:
            return vm
        if vm.state in (State.BOOTING, State.STOPPING):
            raise WrongState(
                name, vm.state, "start", hint=f"another aq process is at it; see `aq status {name}`"
            )
        notes = _ensure_ports(session, vm)
        session.flush()
        detail = "; ".join([f"accel {host.accel}", boot_note, *notes])
        vm = lifecycle.transition(
            session,
            vm.id,
            "start",
            detail,
            accel=host.accel,
        )
        session.refresh(vm, ["forwards"])
        return vm


def _record_pid(vm_id: int, ident: process.Identity) -> None:
    with writing() as session:
        vm = session.get(Vm, vm_id)
        assert vm is not None
        vm.pid, vm.pid_started = ident.pid, ident.started


def _console_offset(files: paths.VmFiles) -> int:
    """Where this boot's console output will start in console.log.

    A log past CONSOLE_LOG_MAX is first moved to console.log.1 (replacing the one
    before), so a VM started many times keeps at most two logs' worth. The log is made
    here, owner-only, and QEMU appends to it.
    """
    log = files.console_log
    try:
        if log.stat().st_size > CONSOLE_LOG_MAX:
            log.replace(log.with_name(log.name + ".1"))
    except FileNotFoundError:
        pass
    with paths.open_private(log, append=True) as handle:
        return os.fstat(handle.fileno()).st_size


def _boot_error(files: paths.VmFiles, failed: BootFailed) -> AqError:
    tail = transcript_tail(files.console_log, 12)
    stderr = ""
    if files.stderr.exists():
        stderr = files.stderr.read_text(errors="replace").strip()
    text = failed.reason
    if stderr:
        text += f"\nQEMU said: {stderr.splitlines()[-1]}"
    if tail:
        text += f"\nlast lines of the serial console:\n{tail}"
    text += f"\n(serial log: {files.console_log})"
    kind = GuestTimeout if failed.guest_timed_out else AqError
    return kind(text, hint="")


def _kill_launched(files: paths.VmFiles, before: process.Identity | None) -> None:
    """Stop this boot's QEMU, found by its pid file (recorded or not yet).

    `before` is whatever QEMU the pid file named when this start began: not this boot's.
    """
    ident = process.from_pidfile(files.pidfile)
    if ident is not None and ident != before:
        process.kill(ident, files.pidfile)


def _arch_of(name: str) -> str | None:
    """The VM's recorded arch (emulated when it is not the host's); None if unknown
    (then the start fails on the missing VM with the usual error)."""
    try:
        with reading() as session:
            return find(session, name).arch
    except NotFound:
        return None


def start(
    name: str,
    wait: bool = True,
    timeout: float = defaults.BOOT_TIMEOUT,
    accel: str | None = None,
    progress: Progress | None = None,
    cold: bool = False,
) -> Outcome:
    """Boot the VM; with `wait`, return once the guest is ready for commands.

    A VM holding a usable saved state resumes from it instead (aq.resume); `cold`
    discards it."""
    progress = progress or Progress()
    reconcile.reconcile(name)
    host = detect(accel, _arch_of(name))
    binary = qemu_binary(host.arch)
    files = paths.vm_files(name)
    boot, why = bootcopy.usable(files)
    boot_note = f"firmware boot ({why})"
    if boot:
        boot_note = "direct kernel boot (PVH entry)" if boot.pvh else "direct kernel boot"
        if boot.replays_devices:  # aq.coldplug
            boot_note += "; initramfs device helper for partitions only (sysinit redoes /dev)"
    # A resume names no boot mode; should it fall back to a cold boot after all, the
    # history's discard note names it (`then`).
    then = boot_note if resume.expected(name, host, binary, cold) else ""
    vm = _begin_start(name, host, resume.RESUMED if then else boot_note)
    if vm.state == State.RUNNING:
        return Outcome(vm, False, f"{name} is already running")
    before = process.from_pidfile(files.pidfile)
    undo = lambda: _kill_launched(files, before)  # noqa: E731
    vm, plan = resume.choose(vm, host, binary, cold, then)
    try:
        with bracket(vm.id, State.BOOTING, "abort", undo, "start") as move:
            if plan is not None:
                resumed = _resume(vm, files, host, binary, plan, timeout, progress, then)
                if resumed is not None:
                    return Outcome(move.finish("ready", resumed), True, f"{name} resumed")
            machine.write_guest_files(vm, files)
            bootcopy.invalidate(files)  # the guest may change its kernel from now on
            offset = _console_offset(files)
            launched = time.monotonic()  # boot-time hook (aq.boottime)
            vm, ident = _launch(vm, files, host, binary, boot)
            paths.restrict_to_owner(files.root)
            _record_pid(vm.id, ident)
            if not wait:
                vm = move.finish("ready", "QEMU is up; guest readiness not awaited (--no-wait)")
                return Outcome(vm, True, f"{name} is starting (QEMU pid {ident.pid})")
            progress.step(f"booting {name} (accel {host.accel})")
            readiness.wait(files, ident, offset, timeout)
            detail = boottime.ready_detail(time.monotonic() - launched, ident.pid)
            detail += readiness.add_other_slots(files)
            vm = move.finish("ready", detail)
            return Outcome(vm, True, f"{name} is running")
    except BootFailed as failed:
        raise _boot_error(files, failed) from None


PORT_RETRIES = 3
_PORT_TAKEN = "Could not set up host forwarding rule"


def _launch(vm: Vm, files, host: HostInfo, binary: str, boot) -> tuple[Vm, process.Identity]:
    """QEMU launched. A port found free may be taken before QEMU binds it (another aq
    home, any program): then aq's own ports are picked again, and QEMU launched again."""
    for attempt in range(PORT_RETRIES + 1):
        argv = machine.argv(vm, files, host, boot)
        argv[0] = binary
        try:
            return vm, process.launch(argv, files.pidfile, files.cmdline, files.stderr)
        except process.LaunchError as err:
            repicked = None
            if attempt < PORT_RETRIES and _PORT_TAKEN in err.stderr:
                repicked = _repick_ports(vm.id)
            if repicked is None:
                raise BootFailed(err.message) from None
            vm = repicked
    raise AssertionError("unreachable")


def _repick_ports(vm_id: int) -> Vm | None:
    """The VM with its taken ports picked again (recorded in history), or None when
    none of its ports is taken now. A port the user chose is a Conflict."""
    with writing() as session:
        vm = session.get(Vm, vm_id)
        assert vm is not None
        notes = _ensure_ports(session, vm)
        if not notes:
            return None
        session.flush()
        lifecycle.record(session, vm, "ports", vm.state, vm.state, "; ".join(notes))
        session.refresh(vm, ["forwards"])
        return vm


def _resume(vm, files, host, binary, plan, timeout, progress, then) -> str | None:
    """The `ready` detail of a resume, or None when the saved state was refused (it is
    discarded, with the reason in the history, and the caller boots cold)."""
    progress.step(f"resuming {vm.name} from its saved state")
    launched = time.monotonic()
    try:
        ident = resume.launch(vm, files, host, binary, plan)
    except resume.SaveFailed as failed:
        resume.discard(vm.id, failed.reason, then=then)
        return None
    _record_pid(vm.id, ident)
    resume.consumed(vm.id, plan)
    how = resume.wake(vm, files, plan, timeout)
    return f"{how}; " + boottime.ready_detail(time.monotonic() - launched, ident.pid)


from aq.stopping import remove, stop  # noqa: E402  (the other half of power; re-exported)

__all__ = ["Outcome", "remove", "start", "stop"]
