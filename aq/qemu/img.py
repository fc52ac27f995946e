"""qemu-img: blank disks, copy-on-write overlays, and what a disk is backed by."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from aq.errors import AqError


def qemu_img() -> str:
    """The qemu-img program, or a clear error saying how to install it."""
    found = shutil.which("qemu-img")
    if not found:
        raise AqError(
            "qemu-img was not found",
            hint="install QEMU (macOS: brew install qemu; Debian: apt install qemu-utils)",
        )
    return found


def _run(args: list[str]) -> str:
    proc = subprocess.run([qemu_img(), *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise AqError(f"qemu-img {args[0]} failed: {detail[-1] if detail else proc.returncode}")
    return proc.stdout


def create_blank(path: Path, size: int) -> None:
    """A new empty qcow2 disk of `size` bytes (virtual)."""
    _run(["create", "-q", "-f", "qcow2", str(path), str(size)])


def create_overlay(path: Path, backing: Path, backing_format: str, size: int | None) -> None:
    """A qcow2 overlay on `backing`: reads fall through, writes stay in `path`."""
    args = ["create", "-q", "-f", "qcow2", "-b", str(backing), "-F", backing_format, str(path)]
    if size is not None:
        args.append(str(size))
    _run(args)


def rebase_unsafe(path: Path, backing: Path, backing_format: str) -> None:
    """Rewrite the backing file name in `path`'s header (the data is not touched)."""
    _run(["rebase", "-u", "-b", str(backing), "-F", backing_format, str(path)])


def info(path: Path, chain: bool = False) -> list[dict]:
    """`qemu-img info --output=json`, one dict per image (the backing chain if asked)."""
    args = ["info", "--output=json", "-U"]
    if chain:
        args.append("--backing-chain")
    out = json.loads(_run([*args, str(path)]))
    return out if isinstance(out, list) else [out]


def virtual_size(path: Path) -> int:
    return int(info(path)[0]["virtual-size"])
