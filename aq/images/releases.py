"""Which Alpine is the latest: the mirror's latest-releases.yaml, cached in the store.

aq never hard-codes a version. `aq images refresh` (or the first `aq new` on a machine
without a cached answer) reads <mirror>/latest-stable/releases/<arch>/latest-releases.yaml
and keeps the alpine-virt entry; later `aq new` runs use the cached answer offline.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from aq import config
from aq.errors import AqError
from aq.store.db import reading, writing
from aq.store.models import Release, utcnow

FLAVOR = "alpine-virt"


@dataclass(frozen=True)
class ReleaseInfo:
    version: str
    arch: str
    branch: str
    file: str
    url: str
    sha256: str
    size: int | None
    released: str | None
    mirror: str

    def iso_url(self, mirror: str | None = None) -> str:
        """Where the ISO is on `mirror` (the configured one now, by default)."""
        mirror = mirror or config.get("mirror") or config.DEFAULT_MIRROR
        return f"{mirror}/{self.branch}/releases/{self.arch}/{self.file}"


def index_url(mirror: str, arch: str) -> str:
    return f"{mirror}/latest-stable/releases/{arch}/latest-releases.yaml"


def parse_index(text: str, mirror: str, arch: str) -> ReleaseInfo:
    """The alpine-virt entry of a latest-releases.yaml for `arch`."""
    import yaml

    try:
        entries = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise AqError(f"the mirror's latest-releases.yaml for {arch} is not valid YAML") from err
    if not isinstance(entries, list):
        raise AqError(f"the mirror's latest-releases.yaml for {arch} is not a list of releases")
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("flavor") != FLAVOR:
            continue
        if str(entry.get("arch", arch)) != arch:
            continue
        version = str(entry["version"])
        file = str(entry.get("iso") or entry["file"])
        branch = str(entry.get("branch") or "v" + ".".join(version.split(".")[:2]))
        sha256 = str(entry.get("sha256", "")).lower()
        if len(sha256) != 64:
            raise AqError(f"the mirror lists {file} without a sha256 checksum")
        date = entry.get("date")
        return ReleaseInfo(
            version=version,
            arch=arch,
            branch=branch,
            file=file,
            url=f"{mirror}/{branch}/releases/{arch}/{file}",
            sha256=sha256,
            size=int(entry["size"]) if entry.get("size") else None,
            released=str(date) if date else None,
            mirror=mirror,
        )
    raise AqError(f"the mirror lists no {FLAVOR} release for {arch}")


def _info(row: Release) -> ReleaseInfo:
    return ReleaseInfo(
        version=row.version,
        arch=row.arch,
        branch=row.branch,
        file=row.file,
        url=row.url,
        sha256=row.sha256,
        size=row.size,
        released=row.released,
        mirror=row.mirror,
    )


def cached(arch: str) -> ReleaseInfo | None:
    """The last answer fetched for `arch`, without touching the network."""
    with reading() as session:
        row = session.scalars(
            select(Release).where(Release.arch == arch, Release.flavor == FLAVOR)
        ).first()
        return _info(row) if row else None


def refresh(arch: str) -> ReleaseInfo:
    """Ask the mirror for the latest release for `arch` and cache the answer."""
    from aq.images.http import fetch

    mirror = config.get("mirror") or config.DEFAULT_MIRROR
    info = parse_index(fetch(index_url(mirror, arch)).decode(), mirror, arch)
    with writing() as session:
        row = session.scalars(
            select(Release).where(Release.arch == arch, Release.flavor == FLAVOR)
        ).first()
        if row is None:
            row = Release(arch=arch, flavor=FLAVOR)
            session.add(row)
        for field in ("version", "branch", "file", "url", "sha256", "size", "released", "mirror"):
            setattr(row, field, getattr(info, field))
        row.fetched_at = utcnow()
    return info
