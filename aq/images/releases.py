"""Which Alpine is the latest: the mirror's latest-releases.yaml, cached in the store.

aq never hard-codes a version. `aq images refresh` (or the first `aq new` on a machine
without a cached answer) reads <mirror>/latest-stable/releases/<arch>/latest-releases.yaml
and keeps the alpine-virt entry; later `aq new` runs use the cached answer offline.

The mirror is not trusted: the index is capped in size and parsed without YAML
anchors or aliases, and every field is checked before use (the version against
Alpine's grammar, the file name must be aq's own alpine-virt-VERSION-ARCH.iso, the
branch must match the version, the sha256 and size must be sane). A mirror offering
an older release than aq has already seen is refused unless the user allows it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select

from aq import config
from aq.errors import AqError, Conflict
from aq.store.db import reading, writing
from aq.store.models import Image, Release, utcnow

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


INDEX_LIMIT = 256 << 10  # Alpine's index is about 5 KB
MAX_ISO = 1 << 30
# ASCII digits only (\d would take any script's digits): 3.23.6, 3.21.0_rc1, 3.20.3_p2.
_VERSION = re.compile(
    r"([0-9]{1,4})\.([0-9]{1,4})\.([0-9]{1,4})(?:_(alpha|beta|rc|p)([0-9]{1,8}))?"
)
_SUFFIX_ORDER = {"alpha": -3, "beta": -2, "rc": -1, None: 0, "p": 1}
_SHA256 = re.compile(r"[0-9a-f]{64}")
_DATE = re.compile(r"[0-9][0-9:. TZ+-]{0,39}")


def version_key(version: str) -> tuple[int, int, int, int, int]:
    """`version` as something that sorts the way Alpine's releases do
    (3.21.0_rc1 < 3.21.0 < 3.21.0_p1 < 3.21.1); ValueError when it is not one."""
    match = _VERSION.fullmatch(version)
    if match is None:
        raise ValueError(version)
    major, minor, patch, suffix, number = match.groups()
    return int(major), int(minor), int(patch), _SUFFIX_ORDER[suffix], int(number or 0)


def _bad(arch: str, what: str) -> AqError:
    return AqError(
        f"the mirror's latest-releases.yaml for {arch} has {what}",
        hint="the mirror is broken or hostile; try another (`aq config set mirror URL`)",
    )


def shown(text: object) -> str:
    """aq.images.http.shown; HTTP's modules load only when a mirror's text is shown."""
    from aq.images.http import shown as safe

    return safe(text)


def _load_yaml(text: str, arch: str):
    """YAML without anchors or aliases (a few lines of them can fill memory)."""
    import yaml

    class NoAliases(yaml.SafeLoader):
        def compose_node(self, parent, index):
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise yaml.YAMLError("anchors and aliases are not allowed")
            return super().compose_node(parent, index)

    try:
        return yaml.load(text, Loader=NoAliases)
    except (yaml.YAMLError, RecursionError, ValueError) as err:
        reason = shown(str(err).splitlines()[0] if str(err) else type(err).__name__)
        raise _bad(arch, f"invalid YAML ({reason})") from None


def _entry_info(entry: dict, mirror: str, arch: str) -> ReleaseInfo:
    """The entry checked field by field: nothing a mirror says is used unchecked."""
    version = str(entry.get("version", ""))
    try:
        version_key(version)
    except ValueError:
        raise _bad(arch, f"a version that is not an Alpine release: '{shown(version)}'") from None
    expected = f"{FLAVOR}-{version}-{arch}.iso"
    for key in ("file", "iso"):
        if key in entry and str(entry[key]) != expected:
            raise _bad(arch, f"{key} '{shown(entry[key])}' where {expected} was expected")
    branch = "v" + ".".join(version.split(".")[:2])
    if "branch" in entry and str(entry["branch"]) != branch:
        raise _bad(arch, f"branch '{shown(entry['branch'])}' for version {version}")
    sha256 = str(entry.get("sha256", "")).lower()
    if not _SHA256.fullmatch(sha256):
        raise _bad(arch, f"no valid sha256 checksum for {expected}")
    size = entry.get("size")
    if size is not None and (type(size) is not int or not 0 < size <= MAX_ISO):
        raise _bad(arch, f"an impossible size for {expected}: '{shown(size)}'")
    date = str(entry["date"]) if entry.get("date") is not None else None
    return ReleaseInfo(
        version=version,
        arch=arch,
        branch=branch,
        file=expected,
        url=f"{mirror}/{branch}/releases/{arch}/{expected}",
        sha256=sha256,
        size=size,
        released=date if date and _DATE.fullmatch(date) else None,
        mirror=mirror,
    )


def parse_index(text: str | bytes, mirror: str, arch: str) -> ReleaseInfo:
    """The alpine-virt entry of a latest-releases.yaml for `arch`, validated."""
    if len(text) > INDEX_LIMIT:
        raise _bad(arch, f"more than {INDEX_LIMIT} bytes")
    if isinstance(text, bytes):
        try:
            text = text.decode()
        except UnicodeDecodeError:
            raise _bad(arch, "text that is not UTF-8") from None
    entries = _load_yaml(text, arch)
    if not isinstance(entries, list):
        raise _bad(arch, "no list of releases")
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("flavor") != FLAVOR:
            continue
        if str(entry.get("arch", arch)) != arch:
            continue
        return _entry_info(entry, mirror, arch)
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
    """The last answer fetched for `arch`, without touching the network; None when
    there is none or it does not pass today's checks (then it is fetched again)."""
    with reading() as session:
        row = session.scalars(
            select(Release).where(Release.arch == arch, Release.flavor == FLAVOR)
        ).first()
        if row is None:
            return None
        fields = {"version": row.version, "branch": row.branch, "file": row.file}
        fields.update(sha256=row.sha256, size=row.size)
        try:
            _entry_info(fields, row.mirror, arch)
        except AqError:
            return None
        return _info(row)


def _newest_seen(arch: str) -> str | None:
    """The newest version aq has cached or installed a base of for `arch`."""
    known = cached(arch)
    with reading() as session:
        seen = set(
            session.scalars(select(Image.version).where(Image.kind == "base", Image.arch == arch))
        )
    if known is not None:
        seen.add(known.version)
    valid = []
    for version in seen:
        try:
            valid.append((version_key(version), version))
        except ValueError:
            continue
    return max(valid)[1] if valid else None


def refresh(arch: str, allow_older: bool = False) -> ReleaseInfo:
    """Ask the mirror for the latest release for `arch` and cache the answer.

    A mirror that offers an older release than aq has already seen (a rollback to a
    release with known holes) is refused unless `allow_older`; the cache is unchanged.
    """
    from aq.images.http import SMALL_LIMIT, fetch

    mirror = config.get("mirror") or config.DEFAULT_MIRROR
    info = parse_index(
        fetch(index_url(mirror, arch), limit=min(INDEX_LIMIT, SMALL_LIMIT)), mirror, arch
    )
    newest = _newest_seen(arch)
    if not allow_older and newest and version_key(info.version) < version_key(newest):
        raise Conflict(
            f"the mirror offers Alpine {info.version} for {arch}, older than {newest} "
            "which aq has already seen",
            hint="if you mean to go back, run `aq images refresh --allow-older`",
        )
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
