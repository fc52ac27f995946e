"""`aq snapshot create`: freeze a VM's disk (and, if it runs, its memory) as a tag.

A snapshot is a read-only link in the backing chain: the VM's overlay becomes the
snapshot image (kind 'snapshot', parent = what the overlay stood on) and the VM gets
a fresh overlay on it, so only changes are stored.

  stopped VM   under the write lock: disk.qcow2 is renamed to the snapshot file, a new
               disk.qcow2 is made on it, both recorded. A saved state the VM held
               (`aq suspend`) matches that disk, so it moves to the snapshot: a live one.
  running VM   filesystems synced through the command channel, the VM paused, QEMU
               switches writes to a new overlay (blockdev-snapshot-sync), the memory is
               saved while still paused, the VM continues; then the files take their
               names (the running QEMU is told the new backing name) and it is recorded.

Each step is written to a journal in the VM's folder first. A snapshot interrupted at
any point (aq or QEMU killed) is finished by the next command that looks (`repair`):
a paused VM continues, the files are rolled forward to a consistent chain and the
snapshot recorded (its memory only if the stream was complete), never half-linked.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from sqlalchemy import select

from aq import bootcopy, paths, reconcile, savedstate
from aq.errors import AqError, Conflict, WrongState
from aq.guest import channel
from aq.images import catalog
from aq.lifecycle import State
from aq.names import validate_name
from aq.qemu import img, process
from aq.statelock import exclusive
from aq.store.db import reading, writing
from aq.store.models import Image, SavedState, Vm
from aq.vm import find


def _journal(files: paths.VmFiles) -> Path:
    return files.root / "snapshot.journal"


def _write_journal(files: paths.VmFiles, data: dict) -> None:
    me = process.identity(os.getpid())
    assert me is not None
    tmp = files.root / "snapshot.journal.tmp"
    paths.write_private(tmp, json.dumps({**data, "owner": [me.pid, me.started]}))
    tmp.replace(_journal(files))


def check_tag(tag: str) -> str:
    try:
        return validate_name(tag)
    except AqError as err:
        raise type(err)(err.message.replace("VM name", "snapshot tag"), hint=err.hint) from None


def _check_tag_free(session, tag: str) -> None:
    if session.scalars(select(Image).where(Image.tag == tag)).first() is not None:
        raise Conflict(f"a snapshot tagged '{tag}' already exists", hint="choose another tag")


def create(name: str, tag: str) -> Image:
    """Snapshot VM `name` as `tag` (live if it runs); the new snapshot image."""
    check_tag(tag)
    reconcile.reconcile(name)
    files = paths.vm_files(name)
    with exclusive(files, name, "snapshot"):
        repair(name)
        with reading() as session:
            vm = find(session, name)
            _check_tag_free(session, tag)
        if vm.state in (State.CREATED, State.STOPPED):
            return _stopped(name, tag, files)
        if vm.state == State.RUNNING:
            return _live(vm, tag, files)
        raise WrongState(name, vm.state, "snapshot", hint=f"wait, then see `aq status {name}`")


def _register(session, vm: Vm, tag: str, snap: Path) -> Image:
    base = session.get(Image, vm.base_image_id) if vm.base_image_id else None
    image = catalog.register(
        session,
        kind="snapshot",
        path=snap,
        fmt="qcow2",
        version=base.version if base else "?",
        arch=vm.arch,
        size=snap.stat().st_size,
        disk_size=vm.disk_size,
        parent=base,
    )
    image.tag = tag
    vm.base_image_id = image.id
    return image


def _stopped(name: str, tag: str, files: paths.VmFiles) -> Image:
    snap = paths.snapshot_disk(tag, secrets.token_hex(4))
    disk = files.disk
    tidy(name)
    with writing() as session:
        vm = find(session, name)
        if vm.state not in (State.CREATED, State.STOPPED):
            raise WrongState(name, vm.state, "snapshot", hint="try again")
        _check_tag_free(session, tag)
        held = session.scalars(select(SavedState).where(SavedState.vm_id == vm.id)).first()
        _write_journal(files, {"kind": "stopped", "tag": tag, "snap": str(snap)})
        disk.rename(snap)
        try:
            img.create_overlay(disk, snap, "qcow2", vm.disk_size)
        except BaseException:
            snap.rename(disk)
            _journal(files).unlink(missing_ok=True)
            raise
        snap.chmod(0o400)
        image = _register(session, vm, tag, snap)
        if held is not None and held.owned and Path(held.path) == files.saved_state:
            _move_memory(session, vm, held, image, files)
        elif held is not None:
            session.delete(held)  # its disk is now the snapshot's; it belongs to no one
    _journal(files).unlink(missing_ok=True)
    # The VM's kernel copy, when current, is the frozen disk's: clones boot it directly.
    bootcopy.share(files.boot_copy, paths.boot_copy_of(snap))
    return image


def _move_memory(session, vm: Vm, held: SavedState, image: Image, files: paths.VmFiles) -> None:
    """A suspended VM's memory matches the disk just frozen: the snapshot takes it
    (a live snapshot), and the VM keeps a copy valid for its new overlay."""
    memory = paths.snapshot_memory(Path(image.path))
    files.saved_state.rename(memory)
    held.vm_id, held.image_id, held.path = None, image.id, str(memory)
    held.disk = f"snapshot {image.id}"
    session.flush()
    copy = savedstate.copy_for(held, savedstate.disk_identity(vm))
    copy.vm_id = vm.id
    session.add(copy)


def _node(qmp, files: paths.VmFiles) -> str:
    """The block device whose active image is in the VM's folder (its disk; after an
    earlier live snapshot QEMU still knows it by its disk.next-* name)."""
    devices = [d for d in qmp.command("query-block") if d.get("inserted")]
    for device in devices:
        if Path(device["inserted"].get("file", "/")).parent == files.root:
            return device.get("device") or device["qdev"]
    # After a live snapshot QEMU may name the active image by a json: description;
    # the VM's one writable drive is its disk.
    writable = [d for d in devices if not d["inserted"].get("ro")]
    if len(writable) == 1:
        return writable[0].get("device") or writable[0]["qdev"]
    raise AqError("QEMU has no drive for the VM's disk", hint="stop and start it, then retry")


def _live(vm: Vm, tag: str, files: paths.VmFiles) -> Image:
    from aq.qemu.monitor import Monitor

    assert vm.pid and vm.pid_started
    ident = process.Identity(vm.pid, vm.pid_started)
    if os.stat(files.root).st_dev != os.stat(paths.images_dir()).st_dev:
        raise AqError(
            "a live snapshot needs the VM's folder and the images folder on one filesystem",
            hint=f"stop the VM (`aq stop {vm.name}`) and snapshot it stopped",
        )
    status, _, err = channel.capture(files, ["sync"], timeout=120)
    if status != 0:
        raise AqError(f"could not sync the guest's filesystems: {err[:200]!r}")
    token = secrets.token_hex(4)
    snap = paths.snapshot_disk(tag, token)
    memory = paths.snapshot_memory(snap)
    part = memory.with_name(memory.name + ".part")
    argv = savedstate.running_argv(ident.pid, files)
    journal = {
        "kind": "live",
        "tag": tag,
        "snap": str(snap),
        "memory": str(memory),
        "disk": vm.disk_path,
    }
    with Monitor(files.qmp, connect_timeout=5, command_timeout=60) as qmp:
        version, machine = savedstate.capture_facts(qmp)
        device = _node(qmp, files)
        node = f"aq-{token}"
        journal.update(
            next=str(files.disk_next(token)),
            node=node,
            device=device,
            facts=[version, machine, vm.accel or "tcg"],
            argv=savedstate.template(argv, vm, files),
        )
        _write_journal(files, journal)
        qmp.command("stop")
        try:
            qmp.command(
                "blockdev-snapshot-sync",
                device=device,
                **{"snapshot-file": journal["next"], "snapshot-node-name": node},
                format="qcow2",
            )
            alive = lambda: process.is_alive(ident, files.pidfile)  # noqa: E731
            try:
                savedstate.save(qmp, part, vm.memory_mib, alive)
                part.replace(memory)
            except savedstate.SaveFailed:
                part.unlink(missing_ok=True)  # a disk-only snapshot, still consistent
        finally:
            qmp.command("cont")
    if "-kernel" in argv:
        # The saved command line boots the VM's kernel copy: clones resume with it.
        bootcopy.share(files.boot_copy, paths.boot_copy_of(snap), only_current=False)
    return _roll_forward(vm.name, files)


def _rebase(name: str, files: paths.VmFiles, journal: dict, snap: Path) -> None:
    """The new overlay's header names the snapshot file as its backing file."""
    from aq.qemu.monitor import Monitor, MonitorError

    with reading() as session:
        vm = find(session, name)
    qemu = process.Identity(vm.pid, vm.pid_started) if vm.pid and vm.pid_started else None
    if qemu is not None and process.is_alive(qemu, files.pidfile):
        try:
            with Monitor(files.qmp, connect_timeout=5) as qmp:
                qmp.command(
                    "change-backing-file",
                    device=journal["device"],
                    **{"image-node-name": journal["node"], "backing-file": str(snap)},
                )
            return
        except MonitorError:
            if process.is_alive(qemu, files.pidfile):
                raise
    img.rebase_unsafe(Path(journal["next"]), snap, "qcow2")


def _roll_forward(name: str, files: paths.VmFiles) -> Image | None:
    """Finish the journal's live snapshot: the frozen disk linked into the images
    folder, the new overlay made the VM's disk and based on it, all recorded.

    Files QEMU has open are never renamed (QEMU reopens them by name, and a migration
    then fails): the frozen disk gets a second name (a hard link) and the VM's disk
    becomes the new overlay under its disk.next-* name until the next start (tidy)."""
    journal = json.loads(_journal(files).read_text())
    snap, memory = Path(journal["snap"]), Path(journal["memory"])
    old, nxt = Path(journal["disk"]), Path(journal["next"])
    if not nxt.exists():  # QEMU never switched: nothing happened
        memory.unlink(missing_ok=True)
        _journal(files).unlink(missing_ok=True)
        return None
    if not snap.exists():
        os.link(old, snap)
    _rebase(name, files, journal, snap)
    snap.chmod(0o400)
    nxt.chmod(0o600)
    with writing() as session:
        vm = find(session, name)
        image = session.scalars(select(Image).where(Image.path == str(snap))).first()
        if image is None:
            tag = journal["tag"]
            if session.scalars(select(Image).where(Image.tag == tag)).first() is not None:
                tag = f"{tag}-{snap.stem.rsplit('-', 1)[-1]}"
            image = _register(session, vm, tag, snap)
            vm.disk_path = str(nxt)
            if memory.exists():
                version, machine, accel = journal["facts"]
                record = savedstate.new_record(
                    path=memory,
                    size=memory.stat().st_size,
                    owned=True,
                    version=version,
                    machine=machine,
                    accel=accel,
                    vm=vm,
                    argv=journal["argv"],
                    disk=f"snapshot {image.id}",
                )
                record.image_id = image.id
                session.add(record)
    _journal(files).unlink(missing_ok=True)
    return image


def tidy(name: str) -> None:
    """With no QEMU running, give the VM's disk its usual name again: after a live
    snapshot it is disk.next-*, and disk.qcow2 is the snapshot's second name."""
    files = paths.vm_files(name)
    with writing() as session:
        vm = find(session, name)
        current = Path(vm.disk_path)
        if current == files.disk or not current.exists() or vm.pid is not None:
            return
        base = session.get(Image, vm.base_image_id) if vm.base_image_id else None
        if files.disk.exists():
            if base is None or not os.path.samefile(files.disk, base.path):
                return  # not a second name of the snapshot: leave it alone
            files.disk.unlink()
        current.rename(files.disk)
        vm.disk_path = str(files.disk)


def repair(name: str) -> None:
    """Finish a snapshot whose aq process died (see the module doc); else nothing."""
    files = paths.vm_files(name)
    try:
        journal = json.loads(_journal(files).read_text())
    except (OSError, ValueError):
        return
    pid, started = journal.get("owner", [0, 0])
    if pid != os.getpid() and process.is_alive(process.Identity(pid, started)):
        return  # it is still at work
    if journal.get("kind") == "live":
        _continue_if_paused(name, files)
        Path(journal["memory"] + ".part").unlink(missing_ok=True)
        _roll_forward(name, files)
        return
    _repair_stopped(files, journal)


def _continue_if_paused(name: str, files: paths.VmFiles) -> None:
    from aq.qemu.monitor import Monitor, MonitorError

    with reading() as session:
        vm = find(session, name)
    if vm.state != State.RUNNING:
        return
    try:
        with Monitor(files.qmp, connect_timeout=3) as qmp:
            if qmp.command("query-status").get("status") in ("paused", "postmigrate"):
                qmp.command("cont")
    except MonitorError:
        pass


def _repair_stopped(files: paths.VmFiles, journal: dict) -> None:
    """A stopped snapshot is one transaction plus two file moves: undo the moves
    unless the transaction committed."""
    snap = Path(journal["snap"])
    with reading() as session:
        done = session.scalars(select(Image).where(Image.path == str(snap))).first()
    if done is None and snap.exists():
        files.disk.unlink(missing_ok=True)  # the new overlay, never recorded
        snap.chmod(0o600)
        snap.rename(files.disk)
        memory = paths.snapshot_memory(snap)
        if memory.exists():
            memory.rename(files.saved_state)
    _journal(files).unlink(missing_ok=True)
