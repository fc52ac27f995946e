"""The alpine-virt ISO image, with pycdlib, laid out as Alpine's."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from . import uefi
from .release import ALPINE_VERSION, ARCH, ARCHES, FLAVOR, PAYLOAD_DIR, ArchSpec


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


def make_iso(
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
