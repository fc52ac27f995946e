"""The host tools the build runs, checked before it starts."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path


def log(msg: str) -> None:
    print(f"[tests.mirror] {msg}", file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_host() -> None:
    from . import uefi  # uefi runs its tools through run() below

    tools = ("qemu-img", "debugfs", "mkfs.ext4", "e2fsck", "extlinux", "mount", "umount", "cp")
    missing = [t for t in (*tools, *uefi.TOOLS) if shutil.which(t) is None]
    if not Path(mbr_bin()).is_file():
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


def mbr_bin() -> str:
    return "/usr/lib/syslinux/mbr/mbr.bin"


def run(*cmd: str | Path) -> str:
    """Run a host tool quietly; on failure raise with its output."""
    p = subprocess.run(
        [str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if p.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stdout}")
    return p.stdout
