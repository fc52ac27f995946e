"""reconcile's verdicts, without a VM: fake QEMUs are sleeping processes whose command
line names the VM's pid file (what process.is_alive checks), fake owners are identities
of processes that are gone."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from sqlalchemy import select

from aq import paths, reconcile, vm
from aq.qemu import process
from aq.store.db import reading, writing
from aq.store.models import Event, Vm


@pytest.fixture
def made(base_image):
    return vm.create(vm.NewVm(name="rec"), base_image)


@pytest.fixture
def fake_qemu(made):
    """A live process that counts as this VM's QEMU; killed by its pid afterwards."""
    pidfile = paths.vm_files(made.name).pidfile
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", str(pidfile)],
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while str(pidfile) not in " ".join(_cmdline(proc.pid)):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        pidfile.write_text(f"{proc.pid}\n")
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def _cmdline(pid: int) -> list[str]:
    import psutil

    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


def _me() -> process.Identity:
    ident = process.identity(os.getpid())
    assert ident is not None
    return ident


GONE = process.Identity(os.getpid(), 1.0)  # our pid, but started in 1970: not alive


def _set(name: str, state: str, qemu=None, owner=None) -> None:
    with writing() as session:
        row = session.scalars(select(Vm).where(Vm.name == name)).one()
        row.state = state
        row.pid, row.pid_started = (qemu.pid, qemu.started) if qemu else (None, None)
        row.owner_pid, row.owner_started = (owner.pid, owner.started) if owner else (None, None)


def _after(name: str) -> tuple[str, str | None, tuple]:
    with reading() as session:
        row = session.scalars(select(Vm).where(Vm.name == name)).one()
        last = session.scalars(
            select(Event).where(Event.vm_id == row.id).order_by(Event.id.desc())
        ).first()
        columns = (row.pid, row.pid_started, row.owner_pid, row.owner_started)
        return row.state, (last.event, last.detail), columns


def _ident(proc) -> process.Identity:
    ident = process.identity(proc.pid)
    assert ident is not None
    return ident


def test_running_with_its_qemu_alive_is_left_alone(made, fake_qemu) -> None:
    _set("rec", "running", qemu=_ident(fake_qemu))
    assert reconcile.reconcile("rec") == 0
    assert _after("rec")[0] == "running"
    assert fake_qemu.poll() is None


def test_running_whose_qemu_is_gone_crashed(made) -> None:
    _set("rec", "running", qemu=GONE)
    assert reconcile.reconcile() == 1
    state, (event, detail), columns = _after("rec")
    assert (state, event) == ("stopped", "crash")
    assert detail == f"crashed: QEMU (pid {GONE.pid}) is gone"
    assert columns == (None, None, None, None)


def test_a_reused_pid_is_not_the_vms_qemu(made) -> None:
    """Our own process is alive but its command line names no pid file of this VM."""
    _set("rec", "running", qemu=_me())
    assert reconcile.reconcile("rec") == 1
    assert _after("rec")[1][0] == "crash"


def test_booting_with_a_live_owner_is_left_alone(made, fake_qemu) -> None:
    _set("rec", "booting", qemu=_ident(fake_qemu), owner=_me())
    assert reconcile.reconcile("rec") == 0
    assert _after("rec")[0] == "booting"


def test_booting_whose_owner_died_kills_qemu(made, fake_qemu) -> None:
    _set("rec", "booting", qemu=_ident(fake_qemu), owner=GONE)
    assert reconcile.reconcile("rec") == 1
    state, (event, detail), _ = _after("rec")
    assert (state, event) == ("stopped", "abort")
    assert detail == (
        f"boot interrupted: aq (pid {GONE.pid}) exited before the guest was ready; QEMU killed"
    )
    assert fake_qemu.wait(10) is not None


def test_pid_window_qemu_found_by_its_pid_file(made, fake_qemu) -> None:
    """aq died after launching QEMU but before recording its pid: the pid file finds it."""
    _set("rec", "booting", qemu=None, owner=GONE)
    assert reconcile.reconcile("rec") == 1
    state, (event, detail), _ = _after("rec")
    assert (state, event) == ("stopped", "abort")
    assert detail == (
        f"boot interrupted: aq (pid {GONE.pid}) exited before recording QEMU's pid "
        f"{fake_qemu.pid}; QEMU killed"
    )
    assert fake_qemu.wait(10) is not None


def test_pid_file_of_another_process_is_not_trusted(made) -> None:
    """A pid file naming a live process that is not this VM's QEMU: nothing is killed."""
    _set("rec", "booting", qemu=None, owner=GONE)
    paths.vm_files("rec").pidfile.write_text(f"{os.getpid()}\n")
    assert reconcile.reconcile("rec") == 1
    assert _after("rec")[1] == (
        "abort",
        f"boot interrupted: aq (pid {GONE.pid}) exited before QEMU started",
    )


def test_booting_whose_qemu_and_owner_died_crashed(made) -> None:
    _set("rec", "booting", qemu=GONE, owner=GONE)
    reconcile.reconcile("rec")
    assert _after("rec")[1] == (
        "crash",
        f"crashed: QEMU (pid {GONE.pid}) died during boot and aq (pid {GONE.pid}) exited",
    )


def test_stopping_whose_owner_died_is_halted(made, fake_qemu) -> None:
    _set("rec", "stopping", qemu=_ident(fake_qemu), owner=GONE)
    reconcile.reconcile("rec")
    assert _after("rec")[1] == (
        "halt",
        f"stop interrupted: aq (pid {GONE.pid}) exited; QEMU killed",
    )
    assert fake_qemu.wait(10) is not None


def test_stopping_finished_but_unrecorded(made) -> None:
    _set("rec", "stopping", qemu=GONE, owner=GONE)
    reconcile.reconcile("rec")
    assert _after("rec")[1] == (
        "halt",
        f"stop completed; aq (pid {GONE.pid}) exited before recording it",
    )


def test_stopped_vms_are_not_looked_at(made) -> None:
    assert reconcile.reconcile() == 0
    assert _after("rec")[0] == "created"


def test_liveness_from_proc_agrees_with_psutil(tmp_path) -> None:
    # aq reads /proc itself on Linux (no psutil import on `aq exec`'s path); both must
    # say the same for a live process, a reused pid, another VM's pid file, a zombie.
    import subprocess
    import time

    import psutil

    from aq.qemu import process

    marker = tmp_path / "qemu.pid"
    proc = subprocess.Popen(["sh", "-c", "sleep 30", str(marker)])
    try:
        time.sleep(0.2)
        ident = process.identity(proc.pid)
        assert ident is not None
        assert abs(psutil.Process(proc.pid).create_time() - ident.started) < 0.01
        cases = [
            (ident, marker, True),
            (ident, tmp_path / "other.pid", False),
            (process.Identity(proc.pid, ident.started - 100), None, False),
        ]
        for case, pidfile, expected in cases:
            assert process._alive_in_proc(case, pidfile) is expected
        proc.kill()
        time.sleep(0.2)  # a zombie until reaped
        assert process._alive_in_proc(ident, None) is False
    finally:
        proc.kill()
        proc.wait()
    assert process._alive_in_proc(ident, None) is False
