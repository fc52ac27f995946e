"""Snapshots and suspends raced by two aq processes, or cut short by kill -9 of aq or of
QEMU: one process wins and the other is told what it found; what an interrupted one
leaves is made consistent by the next command. Real SQLite, real qemu-img and real aq
processes; where a QEMU would be needed, it is a fake (a sleeping process that counts
as the VM's QEMU, and a scripted QMP monitor)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from aq import lifecycle, paths, resume, snapshots, suspend
from aq.errors import AqError
from aq.qemu import img, process
from aq.qemu.hostinfo import HostInfo
from aq.store.db import reading, writing
from aq.store.models import Event, Image, SavedState, Vm
from tests.conftest import aq_process

QEMU = shutil.which("qemu-system-x86_64")
needs_qemu = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")


def _vm(name: str) -> Vm:
    with reading() as session:
        return session.scalars(select(Vm).where(Vm.name == name, Vm.state != "removed")).one()


def _snapshots() -> list[Image]:
    with reading() as session:
        return list(session.scalars(select(Image).where(Image.kind == "snapshot")))


def _chain(name: str) -> list[Path]:
    return [Path(i["filename"]) for i in img.info(Path(_vm(name).disk_path), chain=True)]


def _race(*commands: tuple[str, ...]) -> list[tuple[int, str]]:
    procs = [aq_process(*argv) for argv in commands]
    return [(p.wait(timeout=120), p.stderr.read()) for p in procs]


def _images_files() -> list[str]:
    return sorted(p.name for p in paths.images_dir().iterdir() if "snap" in p.name)


# --- two processes at once ---------------------------------------------------------


def test_one_tag_raced_on_two_vms_one_wins(aq, base_image) -> None:
    assert aq("new", "a").exit_code == 0
    assert aq("new", "b").exit_code == 0
    results = _race(("snapshot", "create", "a", "same"), ("snapshot", "create", "b", "same"))
    assert sorted(code for code, _ in results) == [0, 4], results
    loser = "a" if results[0][0] else "b"
    winner = "b" if loser == "a" else "a"
    assert "a snapshot tagged 'same' already exists" in dict(results)[4]
    (snap,) = _snapshots()
    assert snap.tag == "same"
    assert _chain(winner) == [Path(_vm(winner).disk_path), Path(snap.path), Path(base_image.path)]
    assert _chain(loser) == [paths.vm_files(loser).disk, Path(base_image.path)]
    assert _images_files() == [Path(snap.path).name]  # the loser left no file behind


def test_one_tag_raced_on_one_vm_one_wins(aq, base_image) -> None:
    assert aq("new", "a").exit_code == 0
    results = _race(("snapshot", "create", "a", "same"), ("snapshot", "create", "a", "same"))
    assert sorted(code for code, _ in results) == [0, 4], results
    told = dict(results)[4]
    assert "already exists" in told or "another aq process is suspending or snapshotting" in told
    (snap,) = _snapshots()
    assert _chain("a") == [paths.vm_files("a").disk, Path(snap.path), Path(base_image.path)]


def test_snapshot_rm_raced_with_new_from_never_leaves_a_vm_on_nothing(aq, base_image) -> None:
    """Whichever wins, the other is told: rm refused (4, naming the clone), or the
    clone refused (the snapshot is gone) with no VM and no folder made."""
    outcomes = set()
    for i in range(3):
        tag, clone = f"t{i}", f"c{i}"
        assert aq("new", "src").exit_code == 0
        assert aq("snapshot", "create", "src", tag).exit_code == 0
        assert aq("rm", "src").exit_code == 0  # nothing stands on the snapshot now
        (rm_code, rm_err), (new_code, new_err) = _race(
            ("snapshot", "rm", tag), ("new", clone, "--from", tag)
        )
        if new_code == 0:
            assert rm_code == 4 and f"in use by VM {clone}" in rm_err, rm_err
            (snap,) = [s for s in _snapshots() if s.tag == tag]
            assert _chain(clone)[1] == Path(snap.path)
            assert aq("rm", clone).exit_code == 0
            assert aq("snapshot", "rm", tag).exit_code == 0
        else:
            assert rm_code == 0, rm_err
            assert new_code in (1, 3) and "Error: " in new_err, new_err
            assert aq("status", clone).exit_code == 3
            assert not paths.vm_files(clone).root.exists()
        outcomes.add(new_code == 0)
        assert _images_files() == []
    assert outcomes  # at least one race ran to an end


# --- kill -9 of aq or QEMU during a suspend -----------------------------------------


@pytest.fixture
def running(base_image):
    """A VM recorded as running whose QEMU is a sleeping process (killed afterwards)."""
    from aq import vm

    made = vm.create(vm.NewVm(name="sus"), base_image)
    files = paths.vm_files("sus")
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", str(files.pidfile)],
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while (ident := process.identity(proc.pid)) is None or not _names(proc.pid, files):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        files.pidfile.write_text(f"{proc.pid}\n")
        with writing() as session:
            lifecycle.transition(session, made.id, "start", "test", accel="tcg")
            lifecycle.transition(
                session, made.id, "ready", "test", pid=ident.pid, pid_started=ident.started
            )
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def _names(pid: int, files: paths.VmFiles) -> bool:
    import psutil

    try:
        return str(files.pidfile) in psutil.Process(pid).cmdline()
    except psutil.Error:
        return False


class FakeMonitor:
    """QMP as a QEMU at 7.2 answers it; `migrate` runs `on_migrate` (the test's kill)."""

    on_migrate = staticmethod(lambda: None)

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def command(self, name: str, **args):
        answers = {
            "query-version": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": ""},
            "qom-get": "pc-i440fx-7.2-machine",
            "query-migrate": {"status": "active"},
        }
        if name == "migrate":
            Path(args["uri"].split("> ", 1)[1].strip("'")).write_bytes(b"partial stream")
            type(self).on_migrate()
        return answers.get(name, {})


def _last(vm_id: int) -> tuple[str, str]:
    with reading() as session:
        event = session.scalars(
            select(Event).where(Event.vm_id == vm_id).order_by(Event.id.desc())
        ).first()
        return event.event, event.detail or ""


def _nothing_saved(name: str) -> None:
    files = paths.vm_files(name)
    assert not files.saved_state_part.exists() and not files.saved_state.exists()
    with reading() as session:
        assert session.scalars(select(SavedState)).first() is None


def test_qemu_killed_during_suspend_leaves_a_stopped_vm_and_no_saved_state(
    running, monkeypatch
) -> None:
    from aq.qemu import monitor

    def kill_qemu() -> None:
        running.kill()
        running.wait(10)

    monkeypatch.setattr(FakeMonitor, "on_migrate", staticmethod(kill_qemu))
    monkeypatch.setattr(monitor, "Monitor", FakeMonitor)
    with pytest.raises(AqError, match="QEMU exited during the migration"):
        suspend.suspend("sus")
    vm = _vm("sus")
    assert vm.state == "stopped" and vm.pid is None
    assert _last(vm.id) == ("halt", "QEMU exited during the migration")
    _nothing_saved("sus")


@needs_qemu
@pytest.mark.parametrize("left", ["mid-stream", "stream renamed, not recorded"])
def test_aq_killed_during_suspend_is_finished_by_the_next_command(running, aq, left) -> None:
    """What `aq suspend` killed -9 leaves: the VM stopping under a dead owner, its QEMU
    paused (alive) or already quit, a stream file complete or not, never recorded."""
    files = paths.vm_files("sus")
    ident = process.identity(running.pid)
    with writing() as session:
        lifecycle.transition(session, _vm("sus").id, "stop", "suspend: saving memory")
        row = session.scalars(select(Vm).where(Vm.name == "sus")).one()
        row.owner_pid, row.owner_started = 1, 1.0  # an aq process that is gone
    if left == "mid-stream":
        files.saved_state_part.write_bytes(b"half a stream")
    else:
        running.kill()
        running.wait(10)
        files.saved_state.write_bytes(b"a whole stream")
    assert aq("status", "sus").exit_code == 0  # any command: reconcile
    vm = _vm("sus")
    assert vm.state == "stopped"
    assert not process.is_alive(ident, files.pidfile)
    assert _last(vm.id)[1].startswith(("stop interrupted", "stop completed"))
    _, plan = resume.choose(vm, HostInfo("linux", "x86_64", "tcg"), QEMU, cold=False)
    assert plan is None  # boots cold: nothing half-saved is ever used
    _nothing_saved("sus")


# --- kill -9 during a live snapshot -------------------------------------------------


def _interrupted_live(name: str, base: Image, memory: str) -> dict:
    """The files a live snapshot leaves when aq and QEMU are killed after QEMU switched
    to the new overlay: the old disk (frozen), the new overlay on it, a journal, and
    the memory stream complete, partial or not begun."""
    files = paths.vm_files(name)
    token = "dead0000"
    snap = paths.snapshot_disk("live", token)
    nxt = files.disk_next(token)
    img.create_overlay(nxt, files.disk, "qcow2", None)
    journal = {
        "kind": "live",
        "tag": "live",
        "snap": str(snap),
        "memory": str(paths.snapshot_memory(snap)),
        "disk": str(files.disk),
        "next": str(nxt),
        "node": f"aq-{token}",
        "device": "disk0",
        "facts": ["7.2.0", "pc-i440fx-7.2", "tcg"],
        "argv": ["-machine", "pc"],
        "owner": [1, 1.0],
    }
    paths.write_private(files.root / "snapshot.journal", json.dumps(journal))
    if memory == "complete":
        paths.snapshot_memory(snap).write_bytes(b"a whole stream")
    elif memory == "partial":
        Path(journal["memory"] + ".part").write_bytes(b"half a stream")
    return journal


@pytest.mark.parametrize("memory", ["complete", "partial", "none"])
def test_live_snapshot_killed_with_its_qemu_is_rolled_forward(aq, base_image, memory) -> None:
    assert aq("new", "src").exit_code == 0
    journal = _interrupted_live("src", base_image, memory)
    snap = Path(journal["snap"])
    snapshots.repair("src")
    (image,) = _snapshots()
    assert (image.tag, Path(image.path)) == ("live", snap)
    assert snap.stat().st_mode & 0o777 == 0o400
    assert not Path(journal["memory"] + ".part").exists()
    with reading() as session:
        held = session.scalars(select(SavedState).where(SavedState.image_id == image.id)).first()
    assert (held is not None) == (memory == "complete")  # a partial stream is never kept
    assert not (paths.vm_files("src").root / "snapshot.journal").exists()
    snapshots.tidy("src")  # what the next start does first
    files = paths.vm_files("src")
    assert _vm("src").disk_path == str(files.disk)
    assert _chain("src") == [files.disk, snap, Path(base_image.path)]
    assert not Path(journal["next"]).exists()
    listed = json.loads(aq("snapshot", "ls", "--json").stdout)
    assert [(r["tag"], r["memory"], r["used_by"]) for r in listed] == [
        ("live", memory == "complete", ["src"])
    ]


def test_live_snapshot_killed_before_qemu_switched_changes_nothing(aq, base_image) -> None:
    assert aq("new", "src").exit_code == 0
    journal = _interrupted_live("src", base_image, "partial")
    Path(journal["next"]).unlink()  # QEMU never made the new overlay
    snapshots.repair("src")
    assert _snapshots() == []
    assert not Path(journal["memory"] + ".part").exists()
    assert not (paths.vm_files("src").root / "snapshot.journal").exists()
    assert _chain("src") == [paths.vm_files("src").disk, Path(base_image.path)]


def test_rm_after_a_killed_live_snapshot_keeps_the_snapshot(aq, base_image) -> None:
    assert aq("new", "src").exit_code == 0
    journal = _interrupted_live("src", base_image, "complete")
    assert aq("rm", "src").exit_code == 0
    (image,) = _snapshots()
    assert Path(image.path) == Path(journal["snap"]) and Path(image.path).exists()
    listed = json.loads(aq("snapshot", "ls", "--json").stdout)
    assert [(r["tag"], r["memory"], r["used_by"]) for r in listed] == [("live", True, [])]
    assert aq("snapshot", "rm", "live").exit_code == 0
    assert _images_files() == []


def test_stop_continues_a_vm_a_killed_live_snapshot_left_paused(
    running, aq, base_image, monkeypatch
) -> None:
    from aq import stopping
    from aq.qemu import monitor

    sent: list[str] = []

    class Paused(FakeMonitor):
        def command(self, name: str, **args):
            sent.append(name)
            if name == "query-status":
                return {"status": "paused"}
            return super().command(name, **args)

    monkeypatch.setattr(monitor, "Monitor", Paused)
    _interrupted_live("sus", base_image, "partial")
    stopping.stop("sus", force=True)
    assert sent[:3] == ["query-status", "cont", "change-backing-file"]
    (image,) = _snapshots()
    assert image.tag == "live" and _vm("sus").base_image_id == image.id
    assert _vm("sus").state == "stopped"
    assert not (paths.vm_files("sus").root / "snapshot.journal").exists()
