"""A base's own kernel, initramfs and command line, taken while it is installed.

A new VM's disk is its base until the VM first boots, so a copy of what the base's
bootloader boots is current for every new VM: with it, a VM boots its kernel directly
from its very first start (aq.bootcopy) rather than through the firmware and the
bootloader (9-34 s under TCG, and on aarch64 the GRUB path is the one that has shown
interrupt storms). The installer writes the installed /boot as a tar onto a scratch
disk (aq/guest/postinstall.sh, step 10); aq reads from it only what the bootloader
configuration names, each file bounded, and keeps the copy beside the base disk.
Without a copy (an older base, a configuration aq cannot follow) new VMs boot through
the firmware the first time, as before.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import tarfile
from pathlib import Path

from aq import coldplug, initramfs, paths, pvh
from aq.bootcopy import INITRD_MAX, KERNEL_MAX, Copy, write_record
from aq.guest import bootconfig

SCRATCH_SIZE = 256 << 20  # the scratch disk: far more than /boot holds, and sparse
MEMBERS_MAX = 512
SYSINIT = "/etc/runlevels/sysinit"  # its entries say whether the guest redoes /dev


def make_scratch(path: Path) -> Path:
    """A sparse raw disk for the installer to write /boot onto."""
    with paths.open_private(path) as out:
        out.truncate(SCRATCH_SIZE)
    return path


def _members(archive: tarfile.TarFile) -> tuple[dict[str, tarfile.TarInfo], set[str]]:
    """{guest path: member} for the regular files under /boot, and the names of the
    services in the sysinit runlevel (entries of /etc/runlevels/sysinit, never read)."""
    found: dict[str, tarfile.TarInfo] = {}
    sysinit: set[str] = set()
    for count, member in enumerate(archive):
        if count >= MEMBERS_MAX:
            raise bootconfig.Unsupported(
                f"more than {MEMBERS_MAX} entries under /boot and {SYSINIT} in the installer's tar"
            )
        name = posixpath.normpath("/" + member.name)
        if ".." in member.name.split("/"):
            continue
        if member.isreg() and name.startswith("/boot/"):
            found[name] = member
        elif posixpath.dirname(name) == SYSINIT:
            sysinit.add(posixpath.basename(name))
    return found, sysinit


def _read(archive: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> bytes:
    if member.size > limit:
        raise bootconfig.Unsupported(f"{member.name} is larger than {limit} bytes")
    handle = archive.extractfile(member)
    data = handle.read(limit + 1) if handle is not None else b""
    if len(data) != member.size:
        raise bootconfig.Unsupported(f"{member.name} is cut short")
    return data


def _write(archive, members, target: Path, limit: int, tail: bytes = b"") -> str:
    """Concatenate `members` into `target` (as QEMU's -initrd loads several), then
    `tail` (aq's own bytes); the members' sha256."""
    digest = hashlib.sha256()
    total = 0
    with paths.open_private(target) as out:
        for member in members:
            total += member.size
            if total > limit:  # before reading: the sizes are in the headers
                raise bootconfig.Unsupported(f"boot files larger than {limit} bytes")
            data = _read(archive, member, limit)
            digest.update(data)
            out.write(data)
        out.write(tail)
    return digest.hexdigest()


def _resolve(found: dict, config: str, path: str) -> tuple[str, tarfile.TarInfo]:
    for candidate in bootconfig.candidates(config, path):
        if candidate in found:
            return candidate, found[candidate]
    raise bootconfig.Unsupported(f"the bootloader names {path}, which is not under /boot")


def capture(scratch: Path, dest: Path, arch: str) -> Copy:
    """The copy of what the installed bootloader boots, written to `dest` (a new folder).

    Raises bootconfig.Unsupported (or tarfile.TarError / OSError) with `dest` removed."""
    work = dest.with_name(dest.name + ".part")
    shutil.rmtree(work, ignore_errors=True)
    try:
        paths.make_private_dir(work)
        with tarfile.open(scratch, "r:") as archive:
            found, sysinit = _members(archive)
            configs = [c for c in bootconfig.CONFIGS.get(arch, ()) if c in found]
            if not configs:
                raise bootconfig.Unsupported("the installer wrote no bootloader configuration")
            config = configs[0]
            text = _read(archive, found[config], bootconfig.CONFIG_MAX).decode(errors="replace")
            entry = bootconfig.parse(config, text)
            kernel_path, kernel = _resolve(found, config, entry.kernel)
            initrds = [_resolve(found, config, p) for p in entry.initrds]
            kernel_sha = _write(archive, [kernel], work / "kernel", KERNEL_MAX)
            unpacked = pvh.write_beside(work / "kernel")
            initrd_sha = ""
            replays = bool(initrds) and coldplug.replays_devices(sysinit)
            if initrds:
                members = [m for _, m in initrds]
                tail = coldplug.initrd_tail(replays, arch)
                initrd_sha = _write(archive, members, work / "initrd", INITRD_MAX, tail)
                initramfs.unpack_file(work / "initrd", len(tail))
        copy = Copy(
            config,
            kernel_path,
            [p for p, _ in initrds],
            entry.append,
            kernel_sha,
            initrd_sha,
            True,
            replays,
            unpacked,
        )
        write_record(work, copy)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(work, dest)
        return copy
    finally:
        shutil.rmtree(work, ignore_errors=True)
