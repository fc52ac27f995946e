"""Reading the alpine-virt ISO: its kernel, initramfs and kernel command line.

aq boots the installer by handing QEMU the ISO's own kernel and initramfs (-kernel,
-initrd) with the command line from the ISO's boot configuration, so installing needs
no firmware at all on x86_64. The configuration is syslinux's on x86_64 and GRUB's on
aarch64; both are parsed here (pure functions, tested with the real files' shapes).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from aq.errors import AqError

BOOT_CONFIGS = ("/boot/syslinux/syslinux.cfg", "/boot/grub/grub.cfg")


@dataclass(frozen=True)
class BootEntry:
    kernel: str  # path inside the ISO
    initrd: str
    args: str


def parse_syslinux(text: str) -> BootEntry:
    """The DEFAULT label's KERNEL, INITRD and APPEND from a syslinux.cfg."""
    default = None
    labels: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        key, value = key.upper(), value.strip()
        if key == "DEFAULT":
            default = value
        elif key == "LABEL":
            current = labels.setdefault(value, {})
        elif current is not None and key in ("KERNEL", "LINUX", "INITRD", "APPEND"):
            current["KERNEL" if key == "LINUX" else key] = value
    entry = labels.get(default or "") or next(iter(labels.values()), None)
    if not entry or "KERNEL" not in entry:
        raise AqError("the ISO's syslinux.cfg names no kernel to boot")
    return BootEntry(entry["KERNEL"], entry.get("INITRD", ""), entry.get("APPEND", ""))


def parse_grub(text: str) -> BootEntry:
    """The first menuentry's `linux` and `initrd` lines from a grub.cfg."""
    linux = re.search(r"^\s*linux\s+(\S+)(.*)$", text, re.M)
    initrd = re.search(r"^\s*initrd\s+(\S+)", text, re.M)
    if not linux:
        raise AqError("the ISO's grub.cfg names no kernel to boot")
    return BootEntry(linux.group(1), initrd.group(1) if initrd else "", linux.group(2).strip())


def installer_args(args: str, console: str) -> str:
    """The ISO's kernel arguments with aq's serial console as the only console."""
    kept = [a for a in shlex.split(args) if not a.startswith("console=")]
    return " ".join([*kept, f"console={console},115200"])


def _open(iso_path: Path):
    import pycdlib

    iso = pycdlib.PyCdlib()
    try:
        iso.open(str(iso_path))
    except Exception as err:
        raise AqError(f"{iso_path.name} is not a readable ISO image: {err}") from None
    return iso


def _read(iso, path: str) -> bytes:
    from io import BytesIO

    out = BytesIO()
    for kind in ("rr_path", "joliet_path", "iso_path"):
        if kind == "rr_path" and not iso.has_rock_ridge():
            continue
        if kind == "joliet_path" and not iso.has_joliet():
            continue
        name = path if kind != "iso_path" else _iso9660_name(path)
        try:
            iso.get_file_from_iso_fp(out, **{kind: name})
            return out.getvalue()
        except Exception:
            out.seek(0)
            out.truncate()
    raise FileNotFoundError(path)


def _iso9660_name(path: str) -> str:
    parts = path.upper().replace("-", "_").split("/")
    return "/".join([*parts[:-1], parts[-1] + ";1"])


def extract_boot(iso_path: Path, dest: Path, arch: str, console: str) -> tuple[Path, Path, str]:
    """Copy the kernel and initramfs out of the ISO into `dest`; return them and the args."""
    iso = _open(iso_path)
    try:
        order = BOOT_CONFIGS if arch == "x86_64" else tuple(reversed(BOOT_CONFIGS))
        entry = None
        for config in order:
            try:
                text = _read(iso, config).decode(errors="replace")
            except FileNotFoundError:
                continue
            entry = parse_syslinux(text) if config.endswith("syslinux.cfg") else parse_grub(text)
            break
        if entry is None:
            raise AqError(f"{iso_path.name} has no syslinux.cfg or grub.cfg to boot from")
        kernel, initrd = dest / "vmlinuz", dest / "initramfs"
        try:
            kernel.write_bytes(_read(iso, entry.kernel))
            initrd.write_bytes(_read(iso, entry.initrd))
        except FileNotFoundError as err:
            raise AqError(
                f"{iso_path.name} lacks {err}, which its boot configuration names"
            ) from None
    finally:
        iso.close()
    return kernel, initrd, installer_args(entry.args, console)
