"""Reading the ISO's boot configuration, and the setup-alpine answer file."""

from __future__ import annotations

import subprocess

from aq.images import answers, iso

SYSLINUX = """SERIAL 0 115200
TIMEOUT 10
PROMPT 1
DEFAULT virt

LABEL virt
MENU LABEL Linux virt
KERNEL /boot/vmlinuz-virt
INITRD /boot/initramfs-virt
FDTDIR /boot/dtbs-virt
APPEND modules=loop,squashfs,sd-mod,usb-storage quiet console=tty0 console=ttyS0,115200
"""

GRUB = """set timeout=1
menuentry "Linux virt" {
linux /boot/vmlinuz-virt modules=loop,squashfs,sd-mod,usb-storage quiet console=ttyAMA0,115200
initrd /boot/initramfs-virt
}
"""


def test_parse_syslinux() -> None:
    entry = iso.parse_syslinux(SYSLINUX)
    assert entry.kernel == "/boot/vmlinuz-virt"
    assert entry.initrd == "/boot/initramfs-virt"
    assert entry.args.startswith("modules=loop,squashfs")


def test_parse_syslinux_picks_default_label() -> None:
    text = "DEFAULT b\nLABEL a\nKERNEL /a\nAPPEND x\nLABEL b\nKERNEL /b\nINITRD /ib\nAPPEND y\n"
    assert iso.parse_syslinux(text) == iso.BootEntry("/b", "/ib", "y")


def test_parse_grub() -> None:
    entry = iso.parse_grub(GRUB)
    assert (entry.kernel, entry.initrd) == ("/boot/vmlinuz-virt", "/boot/initramfs-virt")
    assert "quiet" in entry.args


def test_installer_args_use_only_aqs_console() -> None:
    args = iso.installer_args(iso.parse_syslinux(SYSLINUX).args, "ttyAMA0")
    assert args == "modules=loop,squashfs,sd-mod,usb-storage quiet console=ttyAMA0,115200"


def test_answer_file_is_valid_shell_with_the_values() -> None:
    text = answers.render(
        answers.Answers("alpine", "ssh-ed25519 AAAA key's", "http://m/v3.23/main")
    )
    script = (
        text + 'printf "%s|%s|%s|%s" "$HOSTNAMEOPTS" "$ROOTSSHKEY" "$DISKOPTS" "$INTERFACESOPTS"'
    )
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    hostname, key, disk, interfaces = out.split("|")
    assert (hostname, key, disk) == ("alpine", "ssh-ed25519 AAAA key's", "-m sys /dev/vda")
    assert "iface eth0 inet dhcp" in interfaces
    assert "APKREPOSOPTS=http://m/v3.23/main\n" in text
