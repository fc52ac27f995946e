"""Snapshots, clones and saved states against a real SQLite file and real qemu-img
(no guest: the VMs here never boot; tests/test_e2e_snapshots.py boots them)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from aq import paths, resume, savedstate, snapshots
from aq.qemu import img
from aq.qemu.hostinfo import HostInfo
from aq.store.db import reading, writing
from aq.store.models import Event, Image, SavedState, Vm
from tests.conftest import aq_process

QEMU = shutil.which("qemu-system-x86_64")
needs_qemu = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")


def _vm(name: str) -> Vm:
    with reading() as session:
        return session.scalars(select(Vm).where(Vm.name == name, Vm.state != "removed")).one()


def _image(tag: str) -> Image:
    with reading() as session:
        return session.scalars(select(Image).where(Image.tag == tag)).one()


def test_stopped_snapshot_freezes_the_overlay_and_gives_a_fresh_one(aq, base_image) -> None:
    assert aq("new", "src").exit_code == 0
    result = aq("snapshot", "create", "src", "golden", "--json")
    assert result.exit_code == 0, result.stderr
    row = json.loads(result.stdout)
    assert row["tag"] == "golden" and row["memory"] is False and row["used_by"] == ["src"]
    image = _image("golden")
    assert image.kind == "snapshot" and image.parent_id == base_image.id
    snap = Path(image.path)
    assert snap.parent == paths.images_dir()
    assert snap.stat().st_mode & 0o777 == 0o400
    vm = _vm("src")
    assert vm.base_image_id == image.id
    chain = [Path(i["filename"]) for i in img.info(Path(vm.disk_path), chain=True)]
    assert chain == [Path(vm.disk_path), snap, Path(base_image.path)]
    listed = json.loads(aq("snapshot", "ls", "--json").stdout)
    assert [(r["tag"], r["parent"], r["used_by"]) for r in listed] == [
        ("golden", "base 3.23.6", ["src"])
    ]
    tree = aq("snapshot", "ls", "--tree").stdout
    assert tree.splitlines()[0] == "base 3.23.6" and "golden" in tree and "<- src" in tree


def test_snapshot_tag_taken_or_invalid_changes_nothing(aq, base_image) -> None:
    assert aq("new", "src").exit_code == 0
    assert aq("snapshot", "create", "src", "one").exit_code == 0
    disk_before = _vm("src").base_image_id
    taken = aq("snapshot", "create", "src", "one")
    assert taken.exit_code == 4 and "already exists" in taken.stderr
    bad = aq("snapshot", "create", "src", "Bad Tag")
    assert bad.exit_code == 2 and "snapshot tag" in bad.stderr
    assert _vm("src").base_image_id == disk_before
    assert aq("snapshot", "create", "nope", "two").exit_code == 3


def test_snapshot_rm_refuses_while_used_and_prune_keeps_snapshots(aq, base_image) -> None:
    assert aq("new", "src").exit_code == 0
    assert aq("snapshot", "create", "src", "s1").exit_code == 0
    assert aq("snapshot", "create", "src", "s2").exit_code == 0  # s2's parent is s1
    refused = aq("snapshot", "rm", "s1")
    assert refused.exit_code == 4
    assert "VM src" not in refused.stderr and "snapshot s2" in refused.stderr
    assert aq("snapshot", "rm", "s2").exit_code == 4  # src stands on s2
    by_id = aq("images", "rm", str(_image("s1").id))
    assert by_id.exit_code == 4  # `aq images rm` cannot break the chain either
    assert aq("images", "prune").exit_code == 0  # while src stands on s2 on s1 on the base
    assert all(Path(_image(t).path).exists() for t in ("s1", "s2"))
    assert Path(base_image.path).exists()
    assert aq("rm", "src").exit_code == 0
    assert Path(_image("s2").path).exists()  # removing the VM keeps what it stood on
    assert aq("images", "prune").exit_code == 0
    assert Path(_image("s2").path).exists()  # unused, but prune keeps snapshots
    path = Path(_image("s2").path)
    assert aq("snapshot", "rm", "s2").exit_code == 0
    assert not path.exists()
    assert aq("snapshot", "rm", "s1").exit_code == 0
    assert aq("snapshot", "rm", "s1").exit_code == 3
    assert Path(base_image.path).exists()


def test_new_from_count_makes_numbered_clones_on_the_snapshot(aq, base_image) -> None:
    assert aq("new", "src").exit_code == 0
    assert aq("snapshot", "create", "src", "gold").exit_code == 0
    result = aq("new", "web", "--from", "gold", "--count", "3", "--json")
    assert result.exit_code == 0, result.stderr
    made = json.loads(result.stdout)
    assert [v["name"] for v in made] == ["web-1", "web-2", "web-3"]
    assert len({v["mac"] for v in made}) == 3
    snap = _image("gold")
    for clone in made:
        chain = img.info(Path(clone["disk_path"]), chain=True)
        assert Path(chain[1]["filename"]) == Path(snap.path)
    assert set(json.loads(aq("snapshot", "ls", "--json").stdout)[0]["used_by"]) == {
        "src",
        "web-1",
        "web-2",
        "web-3",
    }
    assert aq("new", "x", "--count", "2").exit_code == 2  # --count needs --from
    assert aq("new", "y", "--from", "missing").exit_code == 3


def test_two_snapshots_of_one_vm_at_once_one_wins(aq, base_image) -> None:
    assert aq("new", "src").exit_code == 0
    procs = [aq_process("snapshot", "create", "src", tag) for tag in ("ta", "tb")]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    # Either both ran one after the other (each on the other's result), or the loser was
    # told the VM was busy: never a broken chain.
    assert codes in ([0, 0], [0, 4]), results
    vm = _vm("src")
    chain = img.info(Path(vm.disk_path), chain=True)
    assert Path(chain[-1]["filename"]) == Path(base_image.path)
    assert len(chain) == 1 + codes.count(0) + 1


def test_interrupted_stopped_snapshot_is_undone(aq, base_image) -> None:
    assert aq("new", "src").exit_code == 0
    files = paths.vm_files("src")
    snap = paths.snapshot_disk("lost", "dead0000")
    # What a `aq snapshot create` killed after moving the disk leaves behind.
    paths.write_private(
        files.root / "snapshot.journal",
        json.dumps({"kind": "stopped", "tag": "lost", "snap": str(snap), "owner": [1, 0.0]}),
    )
    files.disk.rename(snap)
    img.create_overlay(files.disk, snap, "qcow2", None)
    snapshots.repair("src")
    assert not snap.exists()
    assert len(img.info(files.disk, chain=True)) == 2  # the VM's own overlay, then the base
    assert not (files.root / "snapshot.journal").exists()
    assert aq("snapshot", "create", "src", "lost").exit_code == 0


def _fake_saved_state(vm: Vm, machine: str) -> SavedState:
    files = paths.vm_files(vm.name)
    paths.write_private(files.saved_state, "x" * 100)
    argv = [QEMU or "qemu-system-x86_64", "-machine", "pc", "-m", str(vm.memory_mib)]
    with writing() as session:
        current = session.get(Vm, vm.id)
        assert current is not None
        state = savedstate.new_record(
            path=files.saved_state,
            size=100,
            owned=True,
            version=savedstate.binary_version(QEMU),
            machine=machine,
            accel="tcg",
            vm=current,
            argv=savedstate.template(argv, current, files),
            disk=savedstate.disk_identity(current),
        )
        state.vm_id = vm.id
        session.add(state)
    return state


@needs_qemu
def test_usable_saved_state_is_chosen(aq, base_image) -> None:
    assert aq("new", "sus").exit_code == 0
    vm = _vm("sus")
    _fake_saved_state(vm, savedstate.resolve_machine(QEMU, "pc"))
    _, plan = resume.choose(vm, HostInfo("linux", "x86_64", "tcg"), QEMU, cold=False)
    assert plan is not None and plan.path == paths.vm_files("sus").saved_state


@needs_qemu
@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("machine", "it needs machine type pc-q35-2.4"),
        ("accel", "it was saved under tcg, this start uses kvm"),
        ("disk", "the disk changed since it was saved"),
        ("cold", "--cold"),
        ("file", "its file saved.state is missing"),
    ],
)
def test_unusable_saved_state_is_discarded_with_its_reason(aq, base_image, change, reason):
    assert aq("new", "sus").exit_code == 0
    vm = _vm("sus")
    machine = "pc-q35-2.4" if change == "machine" else savedstate.resolve_machine(QEMU, "pc")
    _fake_saved_state(vm, machine)
    files = paths.vm_files("sus")
    if change == "disk":
        img.create_overlay(files.root / "other.qcow2", Path(base_image.path), "qcow2", None)
        (files.root / "other.qcow2").replace(files.disk)
    if change == "file":
        files.saved_state.unlink()
    accel = "kvm" if change == "accel" else "tcg"
    host = HostInfo("linux", "x86_64", accel)
    _, plan = resume.choose(vm, host, QEMU, cold=change == "cold")
    assert plan is None
    assert not files.saved_state.exists()
    with reading() as session:
        assert session.scalars(select(SavedState)).first() is None
        detail = session.scalars(select(Event.detail).order_by(Event.id.desc())).first()
    assert detail.startswith("cold boot (saved state discarded: ")
    assert reason in detail


def test_argv_template_fills_in_the_clone_and_drops_incoming(aq, base_image) -> None:
    assert aq("new", "one").exit_code == 0
    assert aq("new", "two").exit_code == 0
    a, b = _vm("one"), _vm("two")
    fa, fb = paths.vm_files("one"), paths.vm_files("two")
    argv = [
        "/usr/bin/qemu-system-x86_64",
        "-name",
        "guest=one",
        "-drive",
        f"if=none,id=disk0,file={fa.disk},format=qcow2",
        "-netdev",
        "user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22",
        "-device",
        f"virtio-net-pci,netdev=net0,mac={a.mac}",
        "-chardev",
        f"socket,id=qmp,path={paths.short_socket_path(fa.qmp)},server=on,wait=off",
        "-pidfile",
        str(fa.pidfile),
        "-incoming",
        "defer",
    ]
    saved = savedstate.template(argv, a, fa)
    joined = " ".join(saved)
    assert "-incoming" not in saved and "guest=one" not in joined and str(fa.root) not in joined
    current = ["qemu", "-netdev", "user,id=net0,hostfwd=tcp:127.0.0.1:2300-:22"]
    out = savedstate.instantiate(saved, b, fb, "/bin/qemu", current)
    assert out[0] == "/bin/qemu"
    assert out[2] == "guest=two"
    assert f"file={fb.disk}," in out[4]
    assert out[6] == current[2]
    assert out[8].endswith(f"mac={b.mac}")
    assert f"path={paths.short_socket_path(fb.qmp)}," in out[10]
    assert out[12] == str(fb.pidfile)


def _start_events(vm_id: int) -> list[tuple[str, str]]:
    with reading() as session:
        rows = session.execute(
            select(Event.event, Event.detail).where(Event.vm_id == vm_id).order_by(Event.id)
        )
        return [(event, detail or "") for event, detail in rows]


@needs_qemu
@pytest.mark.parametrize("cold", [False, True])
def test_start_event_says_resumed_without_a_boot_mode(aq, base_image, monkeypatch, cold):
    """A start that will resume says so, not how it would boot; when the saved state
    is then refused, the discard note says how the VM boots instead. (QEMU is a fake
    that refuses every launch, so the boot ends in `abort`.)"""
    from aq import power
    from aq.errors import AqError
    from aq.qemu import process

    assert aq("new", "sus").exit_code == 0
    vm = _vm("sus")
    _fake_saved_state(vm, savedstate.resolve_machine(QEMU, "pc"))

    def refuse(argv, *rest):
        raise process.LaunchError("no QEMU in this test", "")

    monkeypatch.setattr(process, "launch", refuse)
    with pytest.raises(AqError):
        power.start("sus", accel="tcg", cold=cold)
    events = _start_events(vm.id)
    start = next(detail for event, detail in events if event == "start")
    note = next(detail for event, detail in events if event == "saved-state")
    boot = "firmware boot (no copy of its kernel yet)"
    if cold:
        assert start == f"accel tcg; {boot}"
        assert note == "cold boot (saved state discarded: --cold)"
    else:
        assert start == "accel tcg; resumed"
        assert note.startswith("cold boot (saved state discarded: QEMU refused the saved ")
        assert note.endswith(f"; {boot}")
    assert events[-1][0] == "abort"
    with reading() as session:
        assert session.scalars(select(SavedState)).first() is None


def _saved_states() -> dict[str, bool]:
    """Who holds a saved-state row: VM name or snapshot tag -> owned."""
    with reading() as session:
        out = {}
        for state in session.scalars(select(SavedState)):
            owner = session.get(Vm, state.vm_id) if state.vm_id else None
            image = session.get(Image, state.image_id) if state.image_id else None
            key = f"vm {owner.name} {owner.state}" if owner else f"snapshot {image.tag}"
            out[key] = state.owned
        return out


@needs_qemu
@pytest.mark.parametrize("by", ["snapshot rm", "images rm"])
def test_rm_drops_the_saved_state_rows_but_never_a_snapshots_memory(aq, base_image, by) -> None:
    assert aq("new", "src").exit_code == 0
    _fake_saved_state(_vm("src"), savedstate.resolve_machine(QEMU, "pc"))  # suspended
    assert aq("snapshot", "create", "src", "mem").exit_code == 0  # takes the memory: live
    assert aq("new", "kid", "--from", "mem").exit_code == 0
    memory = paths.snapshot_memory(Path(_image("mem").path))
    assert _saved_states() == {
        "snapshot mem": True,
        "vm src created": False,
        "vm kid created": False,
    }
    assert aq("rm", "kid").exit_code == 0
    assert aq("rm", "src").exit_code == 0
    assert _saved_states() == {"snapshot mem": True}
    assert memory.exists()
    listed = json.loads(aq("snapshot", "ls", "--json").stdout)
    assert [(r["tag"], r["memory"], r["used_by"]) for r in listed] == [("mem", True, [])]
    assert aq("images", "prune").exit_code == 0
    assert memory.exists() and Path(_image("mem").path).exists()
    if by == "snapshot rm":
        assert aq("snapshot", "rm", "mem").exit_code == 0
    else:
        assert aq("images", "rm", str(_image("mem").id)).exit_code == 0
    assert _saved_states() == {} and not memory.exists()


@needs_qemu
def test_machine_alias_is_asked_of_qemu_once_per_binary(aq_home, monkeypatch) -> None:
    savedstate.resolve_machine.cache_clear()
    first = savedstate.resolve_machine(QEMU, "pc")
    assert first.startswith("pc-i440fx-")
    assert json.loads(paths.machine_cache().read_text()) == {
        next(iter(json.loads(paths.machine_cache().read_text()))): first
    }
    savedstate.resolve_machine.cache_clear()  # as in the next aq process

    def no_qemu(*args, **kwargs):
        raise AssertionError("QEMU was asked again")

    monkeypatch.setattr(savedstate, "_ask_machine", no_qemu)
    assert savedstate.resolve_machine(QEMU, "pc") == first
    savedstate.resolve_machine.cache_clear()


def _give_base_a_kernel_copy(base: Image) -> Path:
    from aq import bootcopy

    folder = paths.boot_copy_of(Path(base.path))
    folder.mkdir()
    (folder / "kernel").write_bytes(b"kernel")
    copy = bootcopy.Copy("/boot/extlinux.conf", "/boot/vmlinuz-virt", [], "ro", "k", "", True)
    bootcopy.write_record(folder, copy)
    return folder


def test_kernel_copies_follow_the_disk_from_base_to_vm_to_snapshot_to_clone(aq, base_image):
    """Each new disk starts as the image it overlays, so it boots that image's kernel
    directly at its first start (aq.images.basekernel, aq.bootcopy)."""
    from aq import bootcopy

    _give_base_a_kernel_copy(base_image)
    assert aq("new", "src").exit_code == 0
    assert bootcopy.usable(paths.vm_files("src"))[0] is not None
    assert aq("snapshot", "create", "src", "gold").exit_code == 0
    snap_copy = paths.boot_copy_of(Path(_image("gold").path))
    assert bootcopy.read_record(snap_copy).current
    assert aq("new", "web", "--from", "gold").exit_code == 0
    kernel, _ = bootcopy.usable(paths.vm_files("web"))[0].files(paths.vm_files("web"))
    assert kernel.read_bytes() == b"kernel"
    # A VM whose copy went stale (it was started) gives its snapshot none.
    bootcopy.invalidate(paths.vm_files("web"))
    assert aq("snapshot", "create", "web", "stale").exit_code == 0
    assert not paths.boot_copy_of(Path(_image("stale").path)).exists()
    assert aq("new", "web2", "--from", "stale").exit_code == 0
    assert bootcopy.usable(paths.vm_files("web2")) == (None, "no copy of its kernel yet")
    # The copy goes with its snapshot, and only then.
    for name in ("web2", "web"):
        assert aq("rm", name).exit_code == 0
    assert aq("snapshot", "rm", "stale").exit_code == 0
    assert aq("snapshot", "rm", "gold").exit_code == 4  # src stands on it
    assert snap_copy.exists()
    assert aq("rm", "src").exit_code == 0
    assert aq("snapshot", "rm", "gold").exit_code == 0
    assert not snap_copy.exists()
