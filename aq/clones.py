"""Snapshots as things to list, remove and spawn VMs from (`aq snapshot ls/rm`,
`aq new --from TAG [--count N]`).

A clone is an ordinary VM whose overlay stands on the snapshot. A clone of a live
snapshot also holds a copy of the snapshot's saved-state record (the memory file stays
the snapshot's), so its first `aq start` resumes it and gives it its own identity.
Removal and spawning both run under the write lock, so `aq snapshot rm` and
`aq new --from` of the same tag cannot both win: one sees what the other did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from aq import savedstate
from aq.errors import Conflict, NotFound
from aq.images import catalog
from aq.lifecycle import State
from aq.store.db import reading, writing
from aq.store.models import Image, SavedState, Vm


@dataclass
class SnapshotRow:
    tag: str
    id: int
    parent: str | None  # the parent snapshot's tag, or "base VERSION"
    parent_id: int | None
    path: str
    size: int  # bytes on the host's disk (the frozen overlay, plus memory if any)
    memory: bool
    memory_size: int
    used_by: list[str]
    children: list[str] = field(default_factory=list)
    created_at: object = None


def _disk_bytes(path: str) -> int:
    try:
        return Path(path).stat().st_blocks * 512
    except FileNotFoundError:
        return 0


def find(session, tag: str) -> Image:
    image = session.scalars(select(Image).where(Image.kind == "snapshot", Image.tag == tag)).first()
    if image is None:
        raise NotFound(f"no snapshot tagged '{tag}'", hint="`aq snapshot ls` lists them")
    return image


def listing() -> list[SnapshotRow]:
    """Every snapshot, oldest first, with its parent, sizes, memory and users."""
    with reading() as session:
        used = catalog.users(session)
        images = {i.id: i for i in session.scalars(select(Image).order_by(Image.id))}
        memories = {
            s.image_id: s
            for s in session.scalars(select(SavedState).where(SavedState.image_id.is_not(None)))
        }
    rows = []
    for image in images.values():
        if image.kind != "snapshot":
            continue
        parent = images.get(image.parent_id) if image.parent_id else None
        if parent is None:
            parent_text = None
        elif parent.kind == "snapshot":
            parent_text = parent.tag
        else:
            parent_text = f"base {parent.version}"
        memory = memories.get(image.id)
        memory_size = _disk_bytes(memory.path) if memory else 0
        children = [i.tag or str(i.id) for i in images.values() if i.parent_id == image.id]
        rows.append(
            SnapshotRow(
                tag=image.tag or str(image.id),
                id=image.id,
                parent=parent_text,
                parent_id=image.parent_id,
                path=image.path,
                size=_disk_bytes(image.path) + memory_size,
                memory=memory is not None,
                memory_size=memory_size,
                used_by=used.get(image.id, []),
                children=children,
                created_at=image.created_at,
            )
        )
    return rows


def remove(tag: str) -> SnapshotRow:
    """Remove a snapshot nothing stands on; Conflict (exit 4) naming what does."""
    row = next((r for r in listing() if r.tag == tag), None)
    with writing() as session:
        image = find(session, tag)
        users = catalog.users(session).get(image.id, [])
        children = session.scalars(select(Image.tag).where(Image.parent_id == image.id)).all()
        if users or children:
            what = ", ".join([*(f"VM {u}" for u in users), *(f"snapshot {c}" for c in children)])
            raise Conflict(
                f"snapshot '{tag}' is in use by {what}",
                hint="remove those first (`aq rm NAME`, `aq snapshot rm TAG`)",
            )
        memory = session.scalars(select(SavedState).where(SavedState.image_id == image.id)).first()
        files = [image.path] + ([memory.path] if memory else [])
        if memory is not None:
            session.delete(memory)
        # Clones that were removed may still hold (unowned) copies naming this memory.
        for copy in session.scalars(select(SavedState).where(SavedState.owned.is_(False))):
            if memory is not None and copy.path == memory.path:
                session.delete(copy)
        catalog.forget(session, image)
    from aq.images.manage import delete_files

    delete_files(files)
    assert row is not None
    return row


def clone_names(name: str, count: int | None) -> list[str]:
    """NAME for one clone; NAME-1 ... NAME-N for --count N."""
    if count is None:
        return [name]
    return [f"{name}-{i}" for i in range(1, count + 1)]


def spawn(names: list[str], tag: str, cpus: int | None, memory_mib: int | None, forwards=()):
    """Create one VM per name on the snapshot `tag`; the VMs made (Vm records)."""
    from aq import vm as vms

    with reading() as session:
        image = find(session, tag)
        memory = session.scalars(select(SavedState).where(SavedState.image_id == image.id)).first()
        source = session.get(Vm, memory.source_vm_id) if memory and memory.source_vm_id else None
    if memory is not None:
        memory_mib = memory.memory_mib  # the saved memory fixes the size
        cpus = source.cpus if source is not None else cpus
    specs = [
        vms.NewVm(
            name=name,
            cpus=cpus or vms.defaults.CPUS,
            memory_mib=memory_mib or vms.defaults.MEMORY_MIB,
            forwards=forwards,
        )
        for name in names
    ]
    for spec in specs:
        vms.check_spec(spec)
    made = []
    for spec in specs:
        created = vms.create(spec, image)
        if memory is not None:
            with writing() as session:
                fresh = session.get(Vm, created.id)
                assert fresh is not None and fresh.state == State.CREATED
                copy = savedstate.copy_for(memory, savedstate.disk_identity(fresh))
                copy.vm_id = fresh.id
                session.add(copy)
        made.append(created)
    return made
