"""The images table: which bases exist, which VMs use them, their backing chains."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from aq.lifecycle import State
from aq.store.models import Image


def newest_base(session: Session, arch: str, version: str | None = None) -> Image | None:
    """The most recent base for `arch` (and `version`, when given)."""
    query = select(Image).where(Image.kind == "base", Image.arch == arch)
    if version is not None:
        query = query.where(Image.version == version)
    return session.scalars(query.order_by(Image.created_at.desc(), Image.id.desc())).first()


def register(
    session: Session,
    *,
    kind: str,
    path: Path,
    fmt: str,
    version: str,
    arch: str,
    size: int,
    sha256: str | None = None,
    disk_size: int | None = None,
    parent: Image | None = None,
    source: Image | None = None,
    iso_sha256: str | None = None,
) -> Image:
    """Record an image file aq now owns, in the caller's write transaction."""
    image = Image(
        kind=kind,
        path=str(path),
        format=fmt,
        version=version,
        arch=arch,
        size=size,
        sha256=sha256,
        disk_size=disk_size,
        parent_id=parent.id if parent else None,
        source_id=source.id if source else None,
        iso_sha256=iso_sha256,
    )
    session.add(image)
    session.flush()
    return image


def chain(image: Image | None) -> list[Image]:
    """`image` and the images it is backed by, nearest first (a walk up the parents)."""
    out: list[Image] = []
    while image is not None:
        out.append(image)
        image = image.parent
    return out


def users(session: Session) -> dict[int, list[str]]:
    """Image id -> names of the VMs (not removed) whose disks stand on it."""
    from aq.store.models import Vm

    out: dict[int, list[str]] = {}
    rows = session.execute(
        select(Vm.base_image_id, Vm.name).where(Vm.state != State.REMOVED).order_by(Vm.name)
    )
    for image_id, name in rows:
        if image_id is not None:
            out.setdefault(image_id, []).append(name)
    return out


def listing(session: Session) -> list[tuple[Image, list[str]]]:
    """Every image with the VMs that use it, ISOs first, newest last."""
    used = users(session)
    images = session.scalars(select(Image).order_by(Image.kind.desc(), Image.id))
    return [(image, used.get(image.id, [])) for image in images]


def forget(session: Session, image: Image) -> None:
    """Delete `image`'s row; removed VMs that stood on it lose the link, live ones block."""
    from sqlalchemy import update

    from aq.store.models import Vm

    session.execute(
        update(Vm)
        .where(Vm.base_image_id == image.id, Vm.state == State.REMOVED)
        .values(base_image_id=None)
    )
    session.execute(update(Image).where(Image.source_id == image.id).values(source_id=None))
    session.delete(image)
