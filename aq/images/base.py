"""The base image a new VM is made from: found, or downloaded and installed once.

`ensure_base` is all `aq new` needs. With a base for the latest known release it
touches neither the network nor QEMU. Otherwise it downloads and verifies the ISO and
installs the base, under a file lock so that concurrent first runs do it once while
the others wait for the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from aq import host, paths
from aq.errors import AqError, Conflict, Offline, VerificationFailed
from aq.images import catalog, releases
from aq.progress import Progress
from aq.store.db import reading, writing
from aq.store.models import Image

if TYPE_CHECKING:
    from aq.images.releases import ReleaseInfo


def _existing(kind: str, version: str, arch: str) -> Image | None:
    with reading() as session:
        query = (
            select(Image)
            .where(Image.kind == kind, Image.version == version, Image.arch == arch)
            .order_by(Image.id.desc())
        )
        for image in session.scalars(query):
            if Path(image.path).exists():
                return image
    return None


def current_base(arch: str | None = None) -> Image | None:
    """The newest installed base for `arch`, without network or QEMU."""
    arch = arch or host.guest_arch()
    with reading() as session:
        return catalog.newest_base(session, arch)


def _in_images(path: Path) -> Path:
    """`path`, refused unless it lies under AQ_HOME/images (whatever a mirror says)."""
    from aq.images.http import shown

    try:
        paths.inside_images(path)
    except ValueError:
        raise AqError(f"refusing to write {shown(path)}: it is not inside aq's images") from None
    return path


def ensure_iso(release: ReleaseInfo, progress: Progress) -> Image:
    """The verified ISO of `release`, downloaded now if aq does not have it yet.

    The file is named by aq (not by the mirror) under AQ_HOME/images, written to a
    private .part file and moved into place only after its size, its sha256 and its
    OpenPGP signature check out; on any failure the .part file is deleted and nothing
    is recorded.
    """
    from aq.images.download import download
    from aq.images.http import SMALL_LIMIT, fetch, shown
    from aq.images.verify import check_sha256, check_signature

    found = _existing("iso", release.version, release.arch)
    if found is not None:
        return found
    paths.make_private_dir(paths.images_dir())
    dest = _in_images(paths.iso_file(release.version, release.arch))
    part = _in_images(paths.part_file(dest))
    url = release.iso_url()
    progress.step(f"downloading {dest.name} from {url.rsplit('/', 1)[0]}")
    download(url, dest, progress, size=release.size)
    try:
        progress.step(f"verifying {dest.name} (sha256 and Alpine's signature)")
        check_sha256(part, release.sha256)
        try:
            signature = fetch(url + ".asc", limit=SMALL_LIMIT)
        except Offline:
            raise
        except Exception as err:
            raise VerificationFailed(
                f"the mirror has no usable signature for {dest.name}: {shown(err)}"
            ) from None
        check_signature(part, signature)
        part.replace(dest)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    dest.chmod(0o444)
    with writing() as session:
        return catalog.register(
            session,
            kind="iso",
            path=dest,
            fmt="raw",
            version=release.version,
            arch=release.arch,
            size=dest.stat().st_size,
            sha256=release.sha256,
        )


def build_base(release: ReleaseInfo, progress: Progress) -> Image:
    """Download, verify and install `release` once, even with concurrent callers."""
    from filelock import FileLock

    from aq.images.install import install_base
    from aq.qemu import hostinfo

    paths.make_private_dir(paths.images_dir())
    lock = _in_images(paths.release_lock(release.version, release.arch))
    with FileLock(str(lock)):
        found = _existing("base", release.version, release.arch)
        if found is not None:
            return found
        iso_image = ensure_iso(release, progress)
        progress.step(f"installing Alpine {release.version} onto a base disk (once per release)")
        return install_base(release, iso_image, hostinfo.detect(arch=release.arch), progress)


def ensure_base(progress: Progress, arch: str | None = None) -> Image:
    """A base for the latest known Alpine release, made now if needed."""
    arch = arch or host.guest_arch()
    release = releases.cached(arch)
    if release is None:
        try:
            progress.step("looking up the latest Alpine release")
            release = releases.refresh(arch)
        except (Offline, Conflict) as err:
            # Offline, or the mirror offers an older release than the installed base:
            # the base aq has is the better answer either way.
            fallback = current_base(arch)
            if fallback is not None and Path(fallback.path).exists():
                if isinstance(err, Conflict):
                    progress.step(f"{err.message}; using the installed base {fallback.version}")
                return fallback
            raise
    found = _existing("base", release.version, arch)
    if found is not None:
        return found
    return build_base(release, progress)
