"""Issue 3: the test mirror honours the real alpine-virt ISO's contract, as far as aq
uses it.

The whole proof runs through aq itself, so that aq has no code path that knows it is
talking to a fixture: the `installed` fixture boots the fixture ISO in QEMU and installs
to a blank disk through the serial console with an answer file, then powers off (the
transcript is checked here); the lifecycle tests boot the installed disk, log in on the
console, run commands, reach a tiny `nc` web server through a host port forward and power it
off with QMP system_powerdown (tests/test_e2e_lifecycle.py, tests/test_e2e_guest.py).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from aq.images import iso as iso_module
from aq.images import verify

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(
        "AQ_TEST_MIRROR" in __import__("os").environ, reason="checks the test mirror itself"
    ),
]


def test_mirror_layout_and_release_index(mirror) -> None:
    tree = mirror.tree
    entries = yaml.safe_load(tree.latest_releases.read_text())
    virt = next(e for e in entries if e["flavor"] == "alpine-virt")
    for field in (
        "title",
        "desc",
        "branch",
        "arch",
        "version",
        "flavor",
        "file",
        "iso",
        "date",
        "time",
        "size",
        "sha256",
        "sha512",
    ):
        assert field in virt, field
    assert (virt["version"], virt["arch"], virt["branch"]) == ("3.23.6", "x86_64", "v3.23")
    assert virt["file"] == virt["iso"] == "alpine-virt-3.23.6-x86_64.iso"
    iso = tree.root / "v3.23" / "releases" / "x86_64" / virt["file"]
    assert iso == tree.iso and virt["size"] == iso.stat().st_size
    assert verify.sha256_file(iso) == virt["sha256"]
    sha_line = Path(str(iso) + ".sha256").read_text()
    assert sha_line == f"{virt['sha256']}  {virt['file']}\n"
    assert Path(str(iso) + ".asc").read_text().startswith("-----BEGIN PGP SIGNATURE-----")


def test_signature_verifies_only_with_the_test_key(mirror, monkeypatch) -> None:
    signature = Path(str(mirror.tree.iso) + ".asc").read_bytes()
    monkeypatch.delenv("AQ_TRUSTED_KEY", raising=False)
    monkeypatch.setenv("AQ_HOME", "/nonexistent-aq-home-for-this-test")
    monkeypatch.setattr("aq.config.stored", lambda key: None)
    with pytest.raises(verify.VerificationFailed):
        verify.check_signature(mirror.tree.iso, signature)
    monkeypatch.setenv("AQ_TRUSTED_KEY", str(mirror.tree.public_key))
    fingerprint = verify.check_signature(mirror.tree.iso, signature)
    assert fingerprint != verify.ALPINE_FINGERPRINT


def test_iso_has_the_real_paths_and_boot_configuration(mirror, tmp_path) -> None:
    kernel, initrd, args = iso_module.extract_boot(mirror.tree.iso, tmp_path, "x86_64", "ttyS0")
    assert kernel.read_bytes()[0x202:0x206] == b"HdrS"  # a Linux bzImage
    assert initrd.stat().st_size > 1 << 20
    assert args.startswith("modules=") and args.endswith("console=ttyS0,115200")


def test_install_went_through_the_serial_console(installed) -> None:
    base = next(i for i in installed.json("images") if i["kind"] == "base")
    transcript = Path(base["path"].replace(".qcow2", ".install.log")).read_bytes()
    clean = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]|\r", b"", transcript)
    # The prompt's trailing space may arrive after aq has answered it.
    assert re.search(rb"localhost login: ?\n\[aq\] > root\n ?root\nWelcome to Alpine!", clean)
    assert b"[aq] > ERASE_DISKS=/dev/vda setup-alpine -e -f /tmp/aq/answers" in clean
    assert b"[aq] writing /tmp/aq/answers" in clean
    assert b"AQ-RC:setup:0" in clean
    assert b"reboot: Power down" in clean


def _raw_base(installed, tmp_path: Path) -> Path:
    base = next(i for i in installed.json("images") if i["kind"] == "base")
    raw = tmp_path / "base.raw"
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", base["path"], str(raw)], check=True)
    return raw


def _partition(raw: Path, number: int, table: dict, tmp_path: Path) -> Path:
    part = table["partitiontable"]["partitions"][number - 1]
    out = tmp_path / f"part{number}.img"
    subprocess.run(
        [
            "dd",
            f"if={raw}",
            f"of={out}",
            "bs=512",
            f"skip={part['start']}",
            f"count={part['size']}",
            "conv=sparse",
            "status=none",
        ],
        check=True,
    )
    return out


def _debugfs(image: Path, request: str) -> str:
    return subprocess.run(
        ["debugfs", "-R", request, str(image)], capture_output=True, text=True, check=True
    ).stdout


def test_installed_disk_is_laid_out_as_the_real_installer_does(installed, tmp_path) -> None:
    raw = _raw_base(installed, tmp_path)
    table = json.loads(
        subprocess.run(
            ["sfdisk", "-J", str(raw)], capture_output=True, text=True, check=True
        ).stdout
    )
    assert table["partitiontable"]["label"] == "dos"
    parts = table["partitiontable"]["partitions"]
    assert [p["type"] for p in parts] == ["83", "82", "83"]
    assert parts[0].get("bootable") is True
    mbr = raw.read_bytes()[:440]
    syslinux_mbr = Path("/usr/lib/syslinux/mbr/mbr.bin").read_bytes()[:440]
    assert mbr[: len(syslinux_mbr.rstrip(b"\0"))] == syslinux_mbr.rstrip(b"\0")
    boot = _partition(raw, 1, table, tmp_path)
    listing = _debugfs(boot, "ls -p /")
    for name in ("vmlinuz-virt", "initramfs-virt", "extlinux.conf", "ldlinux.sys"):
        assert f"/{name}/" in listing, name
    extlinux = _debugfs(boot, "cat /extlinux.conf")
    assert re.search(r"APPEND .*root=UUID=\S+", extlinux)
    assert "console=ttyS0,115200" in extlinux
    root = _partition(raw, 3, table, tmp_path)
    fstab = _debugfs(root, "cat /etc/fstab")
    mounts = {
        line.split()[1]: line.split()[0]
        for line in fstab.splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert mounts["/"].startswith("UUID=") and mounts["/boot"].startswith("UUID=")
    assert _debugfs(root, "cat /etc/hostname").strip() == "alpine"
    keys = _debugfs(root, "cat /root/.ssh/authorized_keys")
    aq_key = (installed.path / "keys" / "id_ed25519.pub").read_text().strip()
    assert aq_key in keys
    assert 'rc_sys="lxc"' not in _debugfs(root, "cat /etc/rc.conf")
    inittab = _debugfs(root, "cat /etc/inittab")
    assert re.search(r"^ttyS0::respawn:/sbin/getty", inittab, re.M)
    assert "/usr/libexec/aq/agent-bootstrap" in inittab
