"""Issue 10: the test mirror's aarch64 release is laid out as Alpine's, signed with the
same key as x86_64, and its ISO boots through UEFI (El Torito EFI image with GRUB)."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from aq.images import iso as iso_module
from aq.images import releases, verify

pytestmark = [
    pytest.mark.vm,  # builds (or reuses) the test mirror
    pytest.mark.skipif(
        "AQ_TEST_MIRROR" in __import__("os").environ, reason="checks the test mirror itself"
    ),
]


@pytest.fixture
def arm_tree(mirror):
    return mirror.tree.for_arch("aarch64")


def test_release_index_and_files(mirror, arm_tree) -> None:
    index = arm_tree.latest_releases.read_bytes()
    info = releases.parse_index(index, "http://m", "aarch64")
    assert (info.version, info.arch, info.file) == ("3.23.6", "aarch64", arm_tree.iso.name)
    assert info.url == "http://m/v3.23/releases/aarch64/alpine-virt-3.23.6-aarch64.iso"
    assert arm_tree.release_dir == arm_tree.iso.parent
    assert verify.sha256_file(arm_tree.iso) == info.sha256
    sha_line = Path(f"{arm_tree.iso}.sha256").read_text()
    assert sha_line == f"{info.sha256}  {arm_tree.iso.name}\n"
    assert arm_tree.public_key == mirror.tree.public_key  # one key signs both arches


def test_signature_verifies_with_the_test_key(arm_tree, monkeypatch) -> None:
    monkeypatch.setenv("AQ_TRUSTED_KEY", str(arm_tree.public_key))
    signature = Path(f"{arm_tree.iso}.asc").read_bytes()
    assert verify.check_signature(arm_tree.iso, signature) != verify.ALPINE_FINGERPRINT


def _pe_machine(data: bytes) -> int:
    offset = struct.unpack_from("<I", data, 0x3C)[0]
    assert data[offset : offset + 4] == b"PE\0\0"
    return struct.unpack_from("<H", data, offset + 4)[0]


def test_iso_boots_through_uefi_with_grub(arm_tree, tmp_path) -> None:
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.open(str(arm_tree.iso))
    try:
        assert iso.eltorito_boot_catalog is not None
        entry = iso.eltorito_boot_catalog.initial_entry
        assert iso.eltorito_boot_catalog.validation_entry.platform_id == 0xEF  # EFI
        efi_img = tmp_path / "efi.img"
        with open(efi_img, "wb") as out:
            iso.get_file_from_iso_fp(out, rr_path="/boot/grub/efi.img")
        assert entry.load_rba == iso.get_record(rr_path="/boot/grub/efi.img").extent_location()
        loader = tmp_path / "bootaa64.efi"
        with open(loader, "wb") as out:
            iso.get_file_from_iso_fp(out, rr_path="/efi/boot/bootaa64.efi")
    finally:
        iso.close()
    assert _pe_machine(loader.read_bytes()) == 0xAA64  # an arm64 EFI application
    inside = tmp_path / "from-img.efi"
    subprocess.run(
        ["mcopy", "-i", str(efi_img), "::/EFI/BOOT/BOOTAA64.EFI", str(inside)], check=True
    )
    assert inside.read_bytes() == loader.read_bytes()


def test_aq_reads_the_grub_configuration(arm_tree, tmp_path) -> None:
    kernel, initrd, args = iso_module.extract_boot(arm_tree.iso, tmp_path, "aarch64", "ttyAMA0")
    # Alpine's arm64 vmlinuz is an EFI zboot image (a PE file that decompresses the
    # kernel): only UEFI firmware can start it, which is why aq boots aarch64 via edk2.
    head = kernel.read_bytes()[:4096]
    assert head[:2] == b"MZ" and head[4:8] == b"zimg" and _pe_machine(head) == 0xAA64
    assert initrd.stat().st_size > 1 << 20
    assert args.startswith("modules=") and args.endswith("console=ttyAMA0,115200")
