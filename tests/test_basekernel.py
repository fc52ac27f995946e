"""A base's kernel, taken from the installer's tar of /boot, and handed to new VMs.

The tar is made here as postinstall.sh makes it (names relative to the installed root);
the real one is made by a real install in tests/test_e2e_lifecycle.py, whose first
start then says "direct kernel boot".
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from aq import bootcopy, coldplug
from aq.guest.bootconfig import Unsupported
from aq.images import basekernel
from aq.paths import VmFiles
from tests.test_bootcopy import ALPINE_EXTLINUX, GRUB_CFG
from tests.test_initramfs import ARCHIVE

KERNEL = b"MZ kernel image" * 100
INITRD = b"\x1f\x8b initramfs" * 100


def _tar(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    with path.open("r+b") as disk:  # the scratch disk is bigger than what was written
        disk.truncate(1 << 20)
    return path


def test_an_extlinux_install_gives_a_current_copy(tmp_path) -> None:
    scratch = _tar(
        tmp_path / "scratch",
        {
            "boot/extlinux.conf": ALPINE_EXTLINUX.encode(),
            "boot/vmlinuz-virt": KERNEL,
            "boot/initramfs-virt": INITRD,
            "boot/System.map-virt": b"map",
        },
    )
    dest = tmp_path / "base.boot"
    copy = basekernel.capture(scratch, dest, "x86_64")
    assert copy.current and copy.config == "/boot/extlinux.conf"
    assert copy.kernel == "/boot/vmlinuz-virt" and copy.initrds == ["/boot/initramfs-virt"]
    assert copy.append.startswith("root=UUID=cc1f") and copy.append.endswith("ttyS0,115200")
    assert (dest / "kernel").read_bytes() == KERNEL
    assert copy.kernel_sha256 == hashlib.sha256(KERNEL).hexdigest()
    assert copy.initrd_sha256 == hashlib.sha256(INITRD).hexdigest()
    assert bootcopy.read_record(dest) == copy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.boot", "scratch"]


def test_a_grub_install_on_aarch64(tmp_path) -> None:
    scratch = _tar(
        tmp_path / "scratch",
        {
            "boot/grub/grub.cfg": GRUB_CFG.encode(),
            "boot/vmlinuz-virt": KERNEL,
            "boot/initramfs-virt": INITRD,
        },
    )
    copy = basekernel.capture(scratch, tmp_path / "b", "aarch64")
    assert copy.config == "/boot/grub/grub.cfg" and copy.kernel == "/boot/vmlinuz-virt"
    assert copy.initrds == ["/boot/initramfs-virt"] and copy.append.startswith("root=UUID=9a9a")


def test_a_gzipped_initramfs_is_captured_unpacked(tmp_path) -> None:
    packed = gzip.compress(ARCHIVE, mtime=0)
    boot = {
        "boot/extlinux.conf": ALPINE_EXTLINUX.encode(),
        "boot/vmlinuz-virt": KERNEL,
        "boot/initramfs-virt": packed,
    }
    sysinit = {"etc/runlevels/sysinit/mdev": "/etc/init.d/mdev"}
    copy = basekernel.capture(_tar(tmp_path / "s", boot, sysinit), tmp_path / "b", "x86_64")
    assert (tmp_path / "b" / "initrd").read_bytes() == ARCHIVE + coldplug.overlay("x86_64")
    assert copy.initrd_sha256 == hashlib.sha256(packed).hexdigest()  # the guest's file


def test_an_install_whose_sysinit_redoes_dev_idles_the_initramfs_helper(tmp_path) -> None:
    boot = {
        "boot/extlinux.conf": ALPINE_EXTLINUX.encode(),
        "boot/vmlinuz-virt": KERNEL,
        "boot/initramfs-virt": INITRD,
    }
    sysinit = {f"etc/runlevels/sysinit/{s}": f"/etc/init.d/{s}" for s in ("devfs", "mdev")}
    copy = basekernel.capture(_tar(tmp_path / "s1", boot, sysinit), tmp_path / "b1", "x86_64")
    assert copy.replays_devices
    assert (tmp_path / "b1" / "initrd").read_bytes() == INITRD + coldplug.overlay("x86_64")
    assert copy.initrd_sha256 == hashlib.sha256(INITRD).hexdigest()  # the guest's file
    # Only the runlevel's own entries count: not a service elsewhere, nor a regular file
    # named like one under /boot.
    elsewhere = {
        "etc/runlevels/default/mdev": "/etc/init.d/mdev",
        "etc/runlevels/sysinit/dmesg": "x",
    }
    boot_file = {**boot, "boot/etc/runlevels/sysinit/mdev": b""}
    copy = basekernel.capture(
        _tar(tmp_path / "s2", boot_file, elsewhere), tmp_path / "b2", "x86_64"
    )
    assert not copy.replays_devices
    assert (tmp_path / "b2" / "initrd").read_bytes() == INITRD


def test_a_new_vm_adopts_the_copy_and_boots_it_directly(tmp_path) -> None:
    scratch = _tar(
        tmp_path / "scratch",
        {
            "boot/extlinux.conf": ALPINE_EXTLINUX.encode(),
            "boot/vmlinuz-virt": KERNEL,
            "boot/initramfs-virt": INITRD,
        },
    )
    source = tmp_path / "base.boot"
    basekernel.capture(scratch, source, "x86_64")
    files = VmFiles(tmp_path / "vm")
    files.root.mkdir()
    assert bootcopy.adopt(source, files)
    copy, why = bootcopy.usable(files)
    assert copy is not None and why == ""
    kernel, initrd = copy.files(files)
    assert kernel.read_bytes() == KERNEL and initrd is not None and initrd.read_bytes() == INITRD
    # A start marks the VM's copy stale; the base's stays current for the next VM.
    bootcopy.invalidate(files)
    assert bootcopy.usable(files)[0] is None
    assert bootcopy.read_record(source).current


def test_without_a_base_copy_a_new_vm_boots_through_the_firmware(tmp_path) -> None:
    files = VmFiles(tmp_path / "vm")
    files.root.mkdir()
    assert not bootcopy.adopt(tmp_path / "missing.boot", files)
    assert bootcopy.usable(files) == (None, "no copy of its kernel yet")
    assert not files.boot_copy.exists()


@pytest.mark.parametrize(
    ("members", "links", "why"),
    [
        ({}, None, "no bootloader configuration"),
        ({"boot/extlinux.conf": ALPINE_EXTLINUX.encode()}, None, "names vmlinuz-virt"),
        # A link is never followed, even when its name is what the bootloader boots.
        (
            {"boot/extlinux.conf": ALPINE_EXTLINUX.encode(), "boot/initramfs-virt": INITRD},
            {"boot/vmlinuz-virt": "/etc/shadow"},
            "names vmlinuz-virt",
        ),
        # Names outside /boot do not count.
        (
            {
                "boot/extlinux.conf": ALPINE_EXTLINUX.encode(),
                "etc/vmlinuz-virt": KERNEL,
                "boot/../vmlinuz-virt": KERNEL,
            },
            None,
            "names vmlinuz-virt",
        ),
        ({"boot/extlinux.conf": b"INCLUDE other.conf\n"}, None, "INCLUDE"),
    ],
)
def test_what_cannot_be_followed_leaves_no_copy(tmp_path, members, links, why) -> None:
    scratch = _tar(tmp_path / "scratch", members, links)
    dest = tmp_path / "base.boot"
    with pytest.raises(Unsupported, match=why):
        basekernel.capture(scratch, dest, "x86_64")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scratch"]


def test_oversized_files_are_refused_before_they_are_read(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(basekernel, "KERNEL_MAX", len(KERNEL) - 1)
    scratch = _tar(
        tmp_path / "scratch",
        {
            "boot/extlinux.conf": ALPINE_EXTLINUX.encode(),
            "boot/vmlinuz-virt": KERNEL,
            "boot/initramfs-virt": INITRD,
        },
    )
    with pytest.raises(Unsupported, match="larger than"):
        basekernel.capture(scratch, tmp_path / "base.boot", "x86_64")
    assert not (tmp_path / "base.boot").exists()


def test_a_tar_with_too_many_entries_is_refused_before_it_is_read(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(basekernel, "MEMBERS_MAX", 3)
    boot = {
        "boot/extlinux.conf": ALPINE_EXTLINUX.encode(),
        "boot/vmlinuz-virt": KERNEL,
        "boot/initramfs-virt": INITRD,
    }
    sysinit = {"etc/runlevels/sysinit/mdev": "/etc/init.d/mdev"}
    scratch = _tar(tmp_path / "scratch", boot, sysinit)
    with pytest.raises(Unsupported, match="more than 3 entries under /boot and /etc/runlevels"):
        basekernel.capture(scratch, tmp_path / "base.boot", "x86_64")
    assert not (tmp_path / "base.boot").exists()


def test_an_installer_that_wrote_nothing_is_a_tar_error(tmp_path) -> None:
    scratch = basekernel.make_scratch(tmp_path / "scratch")
    assert scratch.stat().st_size == basekernel.SCRATCH_SIZE
    assert scratch.stat().st_blocks < 64  # sparse
    with pytest.raises((tarfile.TarError, Unsupported)):
        basekernel.capture(scratch, tmp_path / "base.boot", "x86_64")


def test_a_stale_copy_is_shared_only_when_asked_and_stays_stale(tmp_path) -> None:
    """A live snapshot's saved command line names the kernel its QEMU was started with:
    clones need those files to resume, but must not cold-boot them as current."""
    scratch = _tar(
        tmp_path / "scratch",
        {
            "boot/extlinux.conf": ALPINE_EXTLINUX.encode(),
            "boot/vmlinuz-virt": KERNEL,
            "boot/initramfs-virt": INITRD,
        },
    )
    files = VmFiles(tmp_path / "vm")
    files.root.mkdir()
    basekernel.capture(scratch, files.boot_copy, "x86_64")
    bootcopy.invalidate(files)  # the VM was started
    assert not bootcopy.share(files.boot_copy, tmp_path / "stopped-snap.boot")
    assert not (tmp_path / "stopped-snap.boot").exists()
    assert bootcopy.share(files.boot_copy, tmp_path / "live.boot", only_current=False)
    clone = VmFiles(tmp_path / "clone")
    clone.root.mkdir()
    assert bootcopy.adopt(tmp_path / "live.boot", clone)
    assert (clone.boot_copy / "kernel").read_bytes() == KERNEL
    assert bootcopy.usable(clone)[0] is None  # a cold boot goes through the firmware
