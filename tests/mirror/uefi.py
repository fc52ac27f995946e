"""GRUB for the aarch64 test ISO and for the systems its installer writes (UEFI boot).

Alpine's aarch64 ISO boots through UEFI: `efi/boot/bootaa64.efi` is GRUB (made by
aports' mkimg with grub-mkimage and a small early config that finds the ISO and reads
`/boot/grub/grub.cfg`), also inside `boot/grub/efi.img`, the FAT image El Torito
hands to the firmware. Its real setup-disk then runs `grub-install --target=arm64-efi
--efi-directory=/boot/efi --bootloader-id=alpine --boot-directory=/boot --no-nvram`
and copies the loader to the removable path `EFI/boot/bootaa64.efi`.

The raw material has no GRUB and no apk repository, so GRUB comes from Debian's
`grub-efi-arm64-bin` (pinned by sha256 below, unpacked with dpkg-deb, never
installed) and the images are made here with the host's `grub-mkimage` (grub-common):

* `bootaa64.efi` and `efi.img` for the ISO, as aports' mkimg makes them (the early
  config searches for the ISO by a file rather than by its volume label, which
  Joliet truncates);
* `grubaa64.efi` for the installed system, as grub-install makes it: a core image
  whose embedded config is `search.fs_uuid ROOT-UUID root` and
  `set prefix=($root)'/boot/grub'`. The root's UUID is only known in the guest, so
  the image carries a 36-byte placeholder and its offset (`grubaa64.efi.offset`);
  the stand-in setup-alpine writes the real UUID there with dd;
* `grub.tar.gz`: what grub-install puts in /boot/grub (the arm64-efi modules and an
  empty grubenv).
"""

from __future__ import annotations

import tarfile
import urllib.request
from pathlib import Path

from .tools import run, sha256_file

GRUB_DEB_URL = (
    "http://deb.debian.org/debian/pool/main/g/grub2/grub-efi-arm64-bin_2.06-13+deb12u2_arm64.deb"
)
GRUB_DEB_SHA256 = "04e469e0221a357bfe0a1f0fc558f08a92edf99ef13c321aa9ea1e04951a2914"
MODULE_DIR = "usr/lib/grub/arm64-efi"

# aports scripts/mkimg.base.sh (build_grub_efi), plus search_fs_file for the early config.
ISO_MODULES = [
    "all_video",
    "disk",
    "part_gpt",
    "part_msdos",
    "linux",
    "normal",
    "configfile",
    "search",
    "search_label",
    "search_fs_file",
    "efi_gop",
    "fat",
    "iso9660",
    "cat",
    "echo",
    "ls",
    "test",
    "true",
    "help",
    "gzio",
]
# What grub-install embeds for a /boot/grub on ext4 in a GPT partition.
CORE_MODULES = ["part_gpt", "part_msdos", "fat", "ext2", "search_fs_uuid"]
UUID_PLACEHOLDER = b"AQ-ROOT-UUID-PLACEHOLDER-0123456789a"  # 36 bytes, as a UUID
assert len(UUID_PLACEHOLDER) == 36

TOOLS = ("grub-mkimage", "mkfs.vfat", "mmd", "mcopy", "dpkg-deb")
TOOL_PACKAGES = "grub-common dosfstools mtools dpkg"


def fetch_grub_deb(dest: Path) -> Path:
    """Debian's grub-efi-arm64-bin, downloaded once into `dest` and checked by sha256."""
    dest.mkdir(parents=True, exist_ok=True)
    deb = dest / GRUB_DEB_URL.rsplit("/", 1)[1]
    if deb.is_file() and sha256_file(deb) == GRUB_DEB_SHA256:
        return deb
    part = deb.with_suffix(".part")
    with urllib.request.urlopen(GRUB_DEB_URL, timeout=120) as resp, open(part, "wb") as out:
        out.write(resp.read(64 << 20))
    got = sha256_file(part)
    if got != GRUB_DEB_SHA256:
        part.unlink()
        raise RuntimeError(f"{GRUB_DEB_URL}: sha256 {got}, expected {GRUB_DEB_SHA256}")
    part.replace(deb)
    return deb


def unpack_modules(deb: Path, work: Path) -> Path:
    """The arm64-efi module directory from the .deb (dpkg-deb -x; nothing installed)."""
    target = work / "grub-deb"
    run("dpkg-deb", "-x", deb, target)
    modules = target / MODULE_DIR
    if not (modules / "kernel.img").is_file():
        raise RuntimeError(f"{deb.name} has no {MODULE_DIR}/kernel.img")
    return modules


def _mkimage(modules: Path, out: Path, config: str, names: list[str]) -> None:
    early = out.with_suffix(".cfg")
    early.write_text(config)
    run(
        "grub-mkimage",
        "-O",
        "arm64-efi",
        "-d",
        modules,
        "-p",
        "/boot/grub",
        "-c",
        early,
        "-o",
        out,
        *names,
    )
    early.unlink()


def _fat_image(dest: Path, files: dict[str, Path]) -> None:
    """A FAT image holding `files` ({path inside: source}), made without mounting."""
    size_kib = sum(p.stat().st_size for p in files.values()) // 1024 + 1024
    run("mkfs.vfat", "-C", "-n", "ESP", dest, str(size_kib))
    made: set[str] = set()
    for inside in files:
        parts = inside.strip("/").split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            folder = "/".join(parts[:depth])
            if folder not in made:
                run("mmd", "-i", dest, f"::/{folder}")
                made.add(folder)
    for inside, src in files.items():
        run("mcopy", "-i", dest, src, f"::/{inside.strip('/')}")


def make_iso_loader(modules: Path, work: Path) -> tuple[Path, Path]:
    """(bootaa64.efi, efi.img) for the ISO, as aports' mkimg makes them."""
    loader = work / "bootaa64.efi"
    _mkimage(
        modules,
        loader,
        "search --no-floppy --set=root --file /.alpine-release\nset prefix=($root)/boot/grub\n",
        ISO_MODULES,
    )
    efi_img = work / "efi.img"
    _fat_image(efi_img, {"EFI/BOOT/BOOTAA64.EFI": loader})
    return loader, efi_img


def make_install_payload(modules: Path, payload: Path) -> None:
    """grubaa64.efi (+ .offset) and grub.tar.gz for the stand-in setup-alpine."""
    core = payload / "grubaa64.efi"
    placeholder = UUID_PLACEHOLDER.decode()
    _mkimage(
        modules,
        core,
        f"search.fs_uuid {placeholder} root\nset prefix=($root)'/boot/grub'\n",
        CORE_MODULES,
    )
    data = core.read_bytes()
    if data.count(UUID_PLACEHOLDER) != 1:
        raise RuntimeError("grubaa64.efi: the root UUID placeholder is not there exactly once")
    (payload / "grubaa64.efi.offset").write_text(f"{data.index(UUID_PLACEHOLDER)}\n")
    grubenv = b"# GRUB Environment Block\n"
    grubenv += b"#" * (1024 - len(grubenv))
    env_file = payload.parent / "grubenv"
    env_file.write_bytes(grubenv)
    with tarfile.open(payload / "grub.tar.gz", "w:gz", compresslevel=6) as tar:

        def root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            return info

        tar.add(env_file, "boot/grub/grubenv", filter=root_owned)
        for mod in sorted(modules.iterdir()):
            if mod.suffix in (".mod", ".lst"):
                tar.add(mod, f"boot/grub/arm64-efi/{mod.name}", filter=root_owned)
    env_file.unlink()


def iso_grub_cfg(cmdline: str) -> str:
    """boot/grub/grub.cfg as aports' mkimg writes it (grub_gen_config) for virt."""
    return (
        "set timeout=1\n"
        "\n"
        'menuentry "Linux virt" {\n'
        f"linux\t/boot/vmlinuz-virt {cmdline}\n"
        "initrd\t/boot/initramfs-virt\n"
        "}\n"
    )
