"""Listing and pruning the images aq keeps (aq images ...)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from aq.errors import AqError, Conflict, NotFound
from aq.images import catalog
from aq.store.db import reading, writing
from aq.store.models import Image, SavedState


@dataclass(frozen=True)
class ImageRow:
    id: int
    kind: str
    version: str
    arch: str
    path: str
    size: int
    used_by: list[str]
    present: bool


def _row(image: Image, used_by: list[str]) -> ImageRow:
    path = Path(image.path)
    size = path.stat().st_blocks * 512 if path.exists() else 0
    return ImageRow(
        image.id, image.kind, image.version, image.arch, image.path, size, used_by, path.exists()
    )


def list_images() -> list[ImageRow]:
    with reading() as session:
        return [_row(image, used) for image, used in catalog.listing(session)]


def _check_deletable(image: Image) -> None:
    """Refuse, before anything changes, to delete a file outside AQ_HOME/images: the
    path comes from the database, and a row that points elsewhere is not aq's file."""
    from aq import paths
    from aq.safetext import for_terminal

    try:
        paths.inside_images(image.path)
    except ValueError:
        raise AqError(
            f"image {image.id} is recorded at {for_terminal(image.path, one_line=True)}, "
            "outside aq's images folder; aq will not delete it",
            hint="the database was changed outside aq; move that file into "
            "AQ_HOME/images or delete the row",
        ) from None


def delete_files(image_paths: list[str]) -> None:
    """Delete image files (with what aq keeps beside a disk), only under AQ_HOME/images."""
    from aq import paths

    for text in image_paths:
        try:
            path = paths.inside_images(text)  # checked again just before unlinking
        except ValueError:
            continue
        path.unlink(missing_ok=True)
        if path.suffix == ".qcow2":
            paths.transcript_of(path).unlink(missing_ok=True)
            shutil.rmtree(paths.boot_copy_of(path), ignore_errors=True)


def prune() -> list[ImageRow]:
    """Remove every image no VM uses (ISOs, unused bases); return what was removed.

    Snapshots are kept: the user made each on purpose (`aq snapshot rm` removes one)."""
    removed: list[ImageRow] = []
    with writing() as session:
        used = catalog.users(session)
        for image in session.scalars(select(Image).order_by(Image.id)):
            if used.get(image.id) or image.kind == "snapshot":  # `aq snapshot rm` only
                continue
            children = session.scalars(select(Image.id).where(Image.parent_id == image.id))
            if children.first() is not None:
                continue
            _check_deletable(image)
            removed.append(_row(image, []))
            catalog.forget(session, image)
    delete_files([row.path for row in removed])
    return removed


def remove(image_id: int) -> ImageRow:
    """Remove one image; refuse if a VM's disk stands on it."""
    with writing() as session:
        image = session.get(Image, image_id)
        if image is None:
            raise NotFound(f"no image with id {image_id}", hint="`aq images` lists them")
        users = catalog.users(session).get(image.id, [])
        if users:
            raise Conflict(
                f"image {image_id} backs VM(s) {', '.join(users)}",
                hint="remove those VMs first (`aq rm NAME`)",
            )
        children = session.scalars(select(Image.id).where(Image.parent_id == image.id)).all()
        if children:
            raise Conflict(
                f"image {image_id} backs image(s) {', '.join(map(str, children))}",
                hint="remove those first (`aq snapshot rm TAG`, `aq images rm ID`)",
            )
        _check_deletable(image)
        row = _row(image, [])
        # A live snapshot's memory: its row goes with the image's (ON DELETE CASCADE).
        memory = session.scalars(
            select(SavedState.path).where(SavedState.image_id == image.id)
        ).all()
        catalog.forget(session, image)
    delete_files([row.path, *memory])
    return row
