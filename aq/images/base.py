"""The base image a new VM is made from."""

from __future__ import annotations

from aq import host
from aq.errors import NotFound
from aq.images import catalog
from aq.store.db import reading
from aq.store.models import Image


def current_base(arch: str | None = None) -> Image:
    """The newest installed base for the host's architecture."""
    arch = arch or host.guest_arch()
    with reading() as session:
        base = catalog.newest_base(session, arch)
    if base is None:
        raise NotFound(f"no Alpine base image for {arch} yet")
    return base
