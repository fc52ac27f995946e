"""Starting and stopping VMs: the state machine meets QEMU.

  start   created/stopped -> booting (QEMU launched, daemonized) -> running (the guest's
          command channel answers; the boot's duration goes into the history); a failed or
          timed-out boot stops QEMU and records booting -> stopped with the reason.
  stop    running -> stopping -> stopped: ACPI power button (QMP system_powerdown),
          then QMP quit, then SIGKILL, each fallback written into the history.

Every command first reconciles the store with reality (aq.reconcile).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from aq import alloc, boottime, lifecycle, machine, paths, reconcile
from aq.console.expect import transcript_tail
from aq.errors import AqError, Conflict, GuestTimeout, WrongState
from aq.guest import channel
from aq.lifecycle import State
from aq.progress import Progress
from aq.qemu import process
from aq.qemu.hostinfo import HostInfo, detect, qemu_binary
from aq.store.db import writing
from aq.store.models import Vm
from aq.vm import find

DEFAULT_BOOT_TIMEOUT = 300.0
DEFAULT_STOP_TIMEOUT = 60.0
CONSOLE_LOG_MAX = 4 << 20  # bytes; see _console_offset
LOGIN = re.compile(rb"login: ?", re.M)


@dataclass(frozen=True)
class Outcome:
    vm: Vm
    changed: bool
    message: str


def _me() -> process.Identity:
    ident = process.identity(os.getpid())
    assert ident is not None
    return ident


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


def _begin_start(name: str, host: HostInfo) -> tuple[Vm, str | None]:
    """booting, in one transaction: state checked, ports settled, owner recorded."""
    me = _me()
    with writing() as session:
        vm = find(session, name)
        if vm.state == State.RUNNING:
            return vm, None
        if vm.state in (State.BOOTING, State.STOPPING):
            raise WrongState(
                name, vm.state, "start", hint=f"another aq process is at it; see `aq status {name}`"
            )
        notes = _ensure_ports(session, vm)
        session.flush()
        detail = f"accel {host.accel}" + ("; " + "; ".join(notes) if notes else "")
        vm = lifecycle.transition(
            session,
            vm.id,
            "start",
            detail,
            owner_pid=me.pid,
            owner_started=me.started,
            accel=host.accel,
            pid=None,
            pid_started=None,
        )
        session.refresh(vm, ["forwards"])
        return vm, detail


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


def _saw_login(files: paths.VmFiles, offset: int) -> bool:
    try:
        with files.console_log.open("rb") as log:
            log.seek(offset)
            return LOGIN.search(log.read()) is not None
    except FileNotFoundError:
        return False


def _wait_ready(files: paths.VmFiles, ident: process.Identity, offset: int, timeout: float):
    """Until the command channel answers (the guest can run commands: that is ready)."""
    deadline = time.monotonic() + timeout
    while True:
        if not process.is_alive(ident, files.pidfile):
            raise _BootFailed("QEMU exited during boot")
        if channel.ping(files, timeout=min(3.0, max(deadline - time.monotonic(), 0.1))):
            return
        if time.monotonic() > deadline:
            login = _saw_login(files, offset)
            what = "the command channel did not answer" if login else "no login prompt"
            raise _BootFailed(f"the guest was not ready within {timeout:.0f}s ({what})")
        time.sleep(0.25)


class _BootFailed(Exception):
    pass


def _boot_error(files: paths.VmFiles, reason: str) -> AqError:
    tail = transcript_tail(files.console_log, 12)
    stderr = ""
    if files.stderr.exists():
        stderr = files.stderr.read_text(errors="replace").strip()
    text = f"{reason}"
    if stderr:
        text += f"\nQEMU said: {stderr.splitlines()[-1]}"
    if tail:
        text += f"\nlast lines of the serial console:\n{tail}"
    text += f"\n(serial log: {files.console_log})"
    error = GuestTimeout(text, hint="") if "within" in reason else AqError(text, hint="")
    return error


def _abort(vm_id: int, reason: str) -> None:
    with writing() as session:
        vm = session.get(Vm, vm_id)
        if vm is not None and vm.state == State.BOOTING:
            lifecycle.transition(
                session,
                vm_id,
                "abort",
                reason,
                pid=None,
                pid_started=None,
                owner_pid=None,
                owner_started=None,
            )


def start(
    name: str,
    wait: bool = True,
    timeout: float = DEFAULT_BOOT_TIMEOUT,
    accel: str | None = None,
    progress: Progress | None = None,
) -> Outcome:
    """Boot the VM; with `wait`, return once the guest is ready for commands."""
    progress = progress or Progress()
    reconcile.reconcile(name)
    host = detect(accel)
    binary = qemu_binary(host.arch)
    vm, _ = _begin_start(name, host)
    if vm.state == State.RUNNING:
        return Outcome(vm, False, f"{name} is already running")
    files = paths.vm_files(name)
    ident: process.Identity | None = None
    try:
        machine.write_guest_files(vm, files)
        argv = machine.argv(vm, files, host)
        argv[0] = binary
        offset = _console_offset(files)
        launched = time.monotonic()  # boot-time hook (aq.boottime)
        try:
            ident = process.launch(argv, files.pidfile, files.cmdline, files.stderr)
        except process.LaunchError as err:
            raise _BootFailed(str(err)) from None
        paths.restrict_to_owner(files.root)
        _record_pid(vm.id, ident)
        if not wait:
            with writing() as session:
                vm = lifecycle.transition(
                    session,
                    vm.id,
                    "ready",
                    "QEMU is up; guest readiness not awaited (--no-wait)",
                    owner_pid=None,
                    owner_started=None,
                )
            return Outcome(vm, True, f"{name} is starting (QEMU pid {ident.pid})")
        progress.step(f"booting {name} (accel {host.accel})")
        _wait_ready(files, ident, offset, timeout)
        with writing() as session:
            vm = lifecycle.transition(
                session,
                vm.id,
                "ready",
                boottime.ready_detail(time.monotonic() - launched, ident.pid),
                owner_pid=None,
                owner_started=None,
            )
        return Outcome(vm, True, f"{name} is running")
    except _BootFailed as failed:
        if ident is not None:
            process.kill(ident, files.pidfile)
        _abort(vm.id, str(failed))
        raise _boot_error(files, str(failed)) from None
    except BaseException as err:
        if ident is not None:
            process.kill(ident, files.pidfile)
        reason = "interrupted" if isinstance(err, KeyboardInterrupt) else f"failed: {err}"
        _abort(vm.id, f"start {reason}")
        raise


def _begin_stop(name: str) -> tuple[Vm, bool]:
    me = _me()
    with writing() as session:
        vm = find(session, name)
        if vm.state in (State.CREATED, State.STOPPED):
            return vm, False
        if vm.state == State.STOPPING:
            raise WrongState(name, vm.state, "stop", hint="another aq process is stopping it")
        vm = lifecycle.transition(
            session, vm.id, "stop", None, owner_pid=me.pid, owner_started=me.started
        )
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


def stop(name: str, force: bool = False, timeout: float = DEFAULT_STOP_TIMEOUT) -> Outcome:
    """Shut the VM down (see module doc); `force` kills QEMU at once."""
    reconcile.reconcile(name)
    vm, changed = _begin_stop(name)
    if not changed:
        return Outcome(vm, False, f"{name} is already {vm.state}")
    files = paths.vm_files(name)
    ident = process.Identity(vm.pid, vm.pid_started) if vm.pid and vm.pid_started else None
    if ident is None or not process.is_alive(ident, files.pidfile):
        steps = ["QEMU was not running"]
    elif force:
        process.kill(ident, files.pidfile)
        steps = ["killed (--force)"]
    else:
        steps = _powerdown(files, ident, timeout)
    with writing() as session:
        vm = lifecycle.transition(
            session,
            vm.id,
            "halt",
            "; ".join(steps),
            pid=None,
            pid_started=None,
            owner_pid=None,
            owner_started=None,
        )
    files.pidfile.unlink(missing_ok=True)
    return Outcome(vm, True, f"{name} stopped ({steps[-1]})")


def serial_log(name: str) -> Path:
    return paths.vm_files(name).console_log
