"""The bracket around a QEMU action, and start's errors chosen by what happened."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from sqlalchemy import select

from aq import lifecycle, moves, paths, power, vm
from aq.errors import AqError, GuestTimeout
from aq.lifecycle import State
from aq.qemu import process
from aq.store.db import reading, writing
from aq.store.models import Event


def _events(vm_id: int) -> list[tuple[str, str | None]]:
    with reading() as session:
        rows = session.scalars(select(Event).where(Event.vm_id == vm_id).order_by(Event.id))
        return [(e.event, e.detail) for e in rows]


def _begin(vm_id: int, event: str = "start") -> None:
    with writing() as session:
        lifecycle.transition(session, vm_id, event, None)


def test_bracket_finish_records_the_end_move(base_image) -> None:
    made = vm.create(vm.NewVm(name="br"), base_image)
    _begin(made.id)
    with moves.bracket(made.id, State.BOOTING, "abort", lambda: None, "start") as move:
        done = move.finish("ready", "up")
    assert done.state == "running" and done.owner_pid is None
    assert _events(made.id)[-1] == ("ready", "up")


def test_bracket_failure_undoes_and_records_the_reason(base_image) -> None:
    made = vm.create(vm.NewVm(name="br"), base_image)
    _begin(made.id)
    undone: list[bool] = []
    undo = lambda: undone.append(True)  # noqa: E731
    with (
        pytest.raises(RuntimeError),
        moves.bracket(made.id, State.BOOTING, "abort", undo, "start"),
    ):
        raise RuntimeError("disk on fire")
    assert undone == [True]
    assert _events(made.id)[-1] == ("abort", "start failed: disk on fire")
    assert vm.get("br").state == "stopped"


def test_entering_a_state_sets_its_declared_columns(base_image) -> None:
    made = vm.create(vm.NewVm(name="br"), base_image)
    _begin(made.id)
    booting = vm.get("br")
    assert booting.owner_pid is not None and booting.pid is None
    with writing() as session:
        lifecycle.transition(session, made.id, "abort", None)
    stopped = vm.get("br")
    assert (stopped.pid, stopped.owner_pid, stopped.owner_started) == (None, None, None)


def test_qemu_not_starting_in_time_is_not_a_guest_timeout(base_image, monkeypatch) -> None:
    """'QEMU did not start within 120s' is QEMU failing (exit 1), not the guest (exit 8)."""
    made = vm.create(vm.NewVm(name="slow"), base_image)

    def no_start(*args, **kwargs):
        raise process.LaunchError("QEMU did not start within 120s", "")

    monkeypatch.setattr(process, "launch", no_start)
    with pytest.raises(AqError) as caught:
        power.start("slow", accel="tcg")
    assert not isinstance(caught.value, GuestTimeout)
    assert caught.value.exit_code == 1
    assert _events(made.id)[-1] == ("abort", "QEMU did not start within 120s")


def test_start_interrupted_before_recording_the_pid_kills_that_qemu(
    base_image, monkeypatch
) -> None:
    """Ctrl-C right after QEMU daemonized: found by its pid file, killed, recorded."""
    made = vm.create(vm.NewVm(name="int"), base_image)
    pidfile = paths.vm_files("int").pidfile
    spawned: list[subprocess.Popen] = []

    def launch_then_interrupt(argv, pidfile_arg, *rest):
        proc = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)", str(pidfile)],
            stdin=subprocess.DEVNULL,
        )
        spawned.append(proc)
        pidfile.write_text(f"{proc.pid}\n")  # what QEMU does as it daemonizes
        for _ in range(500):  # until its command line is visible
            if process.from_pidfile(pidfile) is not None:
                break
            time.sleep(0.02)
        raise KeyboardInterrupt

    monkeypatch.setattr(process, "launch", launch_then_interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            power.start("int", accel="tcg")
        assert spawned[0].wait(10) is not None
        assert _events(made.id)[-1] == ("abort", "start interrupted")
    finally:
        for proc in spawned:
            proc.kill()
            proc.wait(10)


def test_start_never_deletes_the_pid_file_of_a_live_qemu(base_image) -> None:
    """A QEMU of this VM that the store does not know: refused and left alone, not lost."""
    made = vm.create(vm.NewVm(name="orphan"), base_image)
    pidfile = paths.vm_files("orphan").pidfile
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", str(pidfile)],
        stdin=subprocess.DEVNULL,
    )
    try:
        pidfile.write_text(f"{proc.pid}\n")
        for _ in range(500):
            if process.from_pidfile(pidfile) is not None:
                break
            time.sleep(0.02)
        with pytest.raises(AqError) as caught:
            power.start("orphan", accel="tcg")
        assert caught.value.message.startswith(
            f"a QEMU of this VM is already running (pid {proc.pid})"
        )
        assert proc.poll() is None and pidfile.exists()
        assert _events(made.id)[-1] == (
            "abort",
            f"a QEMU of this VM is already running (pid {proc.pid})",
        )
    finally:
        proc.kill()
        proc.wait(10)


def _hostfwd_ports(argv: list[str]) -> list[int]:
    netdev = next(a for a in argv if a.startswith("user,id=net0"))
    return [int(part.split(":")[2].split("-")[0]) for part in netdev.split(",hostfwd=")[1:]]


def test_a_port_taken_between_the_check_and_qemu_is_picked_again(base_image, monkeypatch):
    """Another aq home (or any program) may bind the port aq found free before QEMU
    does: QEMU then fails to set up the forward, and aq picks its port again."""
    import socket

    made = vm.create(vm.NewVm(name="race"), base_image)
    first = vm.get("race").forwards[0].host_port
    seen: list[list[int]] = []
    holder = socket.socket()

    def launch(argv, *rest):
        seen.append(_hostfwd_ports(argv))
        if len(seen) == 1:  # the other home binds it now, and QEMU cannot
            holder.bind(("127.0.0.1", first))
            holder.listen()
            rule = f"tcp:127.0.0.1:{first}-:22"
            raise process.LaunchError(
                "QEMU failed to start: ...", f"Could not set up host forwarding rule '{rule}'"
            )
        raise process.LaunchError("no QEMU in this test", "")

    monkeypatch.setattr(process, "launch", launch)
    try:
        with pytest.raises(AqError, match="no QEMU in this test"):
            power.start("race", accel="tcg")
    finally:
        holder.close()
    assert seen[0] == [first] and len(seen) == 2 and seen[1][0] != first
    events = _events(made.id)
    assert events[-2] == ("ports", f"port {first} was taken, now {seen[1][0]}->22")
    assert vm.get("race").forwards[0].host_port == seen[1][0]


def test_a_port_the_user_chose_and_lost_is_a_conflict_not_a_retry(base_image, monkeypatch):
    import socket

    from aq.netspec import parse_forward

    vm.create(vm.NewVm(name="mine", forwards=[parse_forward("18022:22")]), base_image)
    calls = []
    holder = socket.socket()

    def launch(argv, *rest):
        calls.append(argv)
        holder.bind(("127.0.0.1", 18022))
        holder.listen()
        raise process.LaunchError("QEMU failed", "Could not set up host forwarding rule 'x'")

    monkeypatch.setattr(process, "launch", launch)
    try:
        with pytest.raises(AqError, match="in use by another program") as caught:
            power.start("mine", accel="tcg")
    finally:
        holder.close()
    assert caught.value.exit_code == 4 and len(calls) == 1
