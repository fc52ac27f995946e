"""Issue 10, end to end: the Apple Silicon path (aarch64 guests, edk2 UEFI, GRUB, the
virt machine's PL011, virtio-serial, pvpanic-pci and ACPI power button), run under
emulation (TCG) on this x86_64 host with `aq new --arch aarch64`.

One aarch64 base install and one booted VM are shared by the tests in this module,
which run in order; never more than one aarch64 guest boots at a time. TCG runs
aarch64 code slowly on these 2-core machines, so the waits are long but bounded.
"""

from __future__ import annotations

import os
import pty
import sys
import time

import pytest

from aq import host
from tests.conftest import VM_CPUS
from tests.e2e import REPO, Home, stop_all_qemu, vm_env
from tests.test_e2e_guest import _read_until

pytestmark = [
    pytest.mark.vm,
    pytest.mark.timeout(2400),
    pytest.mark.skipif(host.guest_arch() == "aarch64", reason="aarch64 is native here"),
]

ARCH = "aarch64"
INSTALL_TIMEOUT = 2400  # seconds: a whole base install under aarch64 emulation
BOOT_TIMEOUT = "1200"


@pytest.fixture(scope="module")
def arm(tmp_path_factory, mirror):
    """An aq home whose first `aq new --arch aarch64` installed the aarch64 base."""
    path = tmp_path_factory.mktemp("aq-aarch64")
    home = Home(path, vm_env(path, mirror))
    started = time.monotonic()
    made = home.aq(
        "new", "arm-a", "--arch", ARCH, "--cpus", VM_CPUS, "--json", timeout=INSTALL_TIMEOUT
    )
    home.notes["install_s"] = time.monotonic() - started
    home.notes["new"] = made
    try:
        yield home
    finally:
        stop_all_qemu(path)


@pytest.fixture(scope="module")
def arm_vm(arm):
    """arm-a, booted once and shared (the stop test powers it off at the end)."""
    started = time.monotonic()
    arm.aq("start", "arm-a", "--timeout", BOOT_TIMEOUT, timeout=int(BOOT_TIMEOUT) + 60)
    arm.notes["boot_s"] = time.monotonic() - started
    return "arm-a"


def test_base_install_through_edk2_and_grub(arm) -> None:
    assert arm.json("status", "arm-a")["arch"] == ARCH
    images = arm.json("images")
    assert {(i["kind"], i["arch"]) for i in images} == {("iso", ARCH), ("base", ARCH)}
    transcript = next((arm.path / "images").glob("*aarch64-base*.log")).read_text(errors="replace")
    # The stand-in installs GRUB for UEFI only when the installer booted through UEFI
    # (/sys/firmware/efi), as setup-disk does; Alpine's arm64 kernel (an EFI zboot
    # image) starts only from UEFI firmware anyway.
    assert "Installing GRUB (arm64-efi)" in transcript
    assert "aq-postinstall: done" in transcript


def test_exec_runs_on_an_aarch64_guest_booted_by_uefi(arm, arm_vm) -> None:
    assert arm.aq("exec", arm_vm, "--", "uname", "-m").stdout == "aarch64\n"
    layout = arm.sh(
        arm_vm,
        "test -d /sys/firmware/efi && echo uefi; "
        "awk '$2 == \"/boot/efi\" { print $3 }' /proc/mounts; "
        "ls /boot/efi/EFI/boot /boot/efi/EFI/alpine; "
        "grep -c 'console=ttyAMA0' /boot/grub/grub.cfg; cat /proc/cmdline",
    ).stdout.split()
    assert layout[:2] == ["uefi", "vfat"]
    assert "bootaa64.efi" in [x.lower() for x in layout] and "grubaa64.efi" in layout
    assert "console=ttyAMA0,115200" in layout
    assert "soft lockup" not in arm.aq("exec", arm_vm, "--", "dmesg").stdout
    grub = arm.aq("exec", arm_vm, "--", "cat", "/boot/grub/grub.cfg").stdout
    assert "--unit=ttyAMA0" not in grub and "load_video\n" not in grub.replace(
        "function load_video", ""
    )
    status = arm.json("status", arm_vm)
    assert (status["arch"], status["accel"], status["state"]) == (ARCH, "tcg", "running")
    # It booted its kernel directly, and the initramfs handed partitions to mdev
    # through aq's aarch64 helper program (aq.blockhelper): only there are the
    # by-partuuid links made (the installed busybox blkid reports no PARTUUID).
    assert "initramfs device helper for partitions only" in _boot_paths(arm, arm_vm)[-1]
    partuuid = arm.sh(arm_vm, "ls -l /dev/disk/by-partuuid").stdout
    assert partuuid.count("-> ../../vda") >= 2


def test_cp_both_ways(arm, arm_vm, tmp_path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("to the arm guest\n")
    src.chmod(0o640)
    arm.aq("cp", str(src), f"{arm_vm}:/root/in.txt")
    assert arm.aq("exec", arm_vm, "--", "stat", "-c", "%a", "/root/in.txt").stdout == "640\n"
    arm.sh(arm_vm, "uname -m > /root/out.txt")
    arm.aq("cp", f"{arm_vm}:/root/out.txt", str(tmp_path / "out.txt"))
    assert (tmp_path / "out.txt").read_text() == "aarch64\n"
    assert arm.aq("exec", arm_vm, "--", "cat", "/root/in.txt").stdout == "to the arm guest\n"


def test_console_login_on_the_pl011(arm, arm_vm) -> None:
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(arm.env)
        os.chdir(REPO)
        os.execv(sys.executable, [sys.executable, "-m", "aq", "console", arm_vm])
    try:
        _read_until(fd, b"Detach with", 30)
        os.write(fd, b"\r")
        _read_until(fd, b"login:", 120)
        os.write(fd, b"root\r")
        _read_until(fd, b"# ", 120)
        os.write(fd, b"tty; echo arm$((40+2))\r")
        seen = _read_until(fd, b"arm42", 120)
        assert b"/dev/ttyAMA0" in seen
        os.write(fd, b"exit\r")
        os.write(fd, b"\x1d")
        assert b"detached" in _read_until(fd, b"detached", 30)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(fd)


def test_stop_powers_off_on_the_acpi_button(arm, arm_vm) -> None:
    arm.aq("stop", arm_vm, "--timeout", "300", timeout=600)
    detail = arm.json("history", arm_vm)[-1]["detail"] or ""
    assert "ACPI power button pressed" in detail and "guest powered off" in detail
    assert "fallback" not in detail


def _boot_paths(home: Home, vm: str) -> list[str]:
    """Each start's boot path, from the history ("firmware boot (...)" or "direct ...")."""
    return [e["detail"] or "" for e in home.json("history", vm) if e["event"] == "start"]


def test_second_vm_a_kernel_panic_and_a_firmware_boot_after_it(arm, arm_vm) -> None:
    """A VM that crashed boots through edk2 and GRUB (it has no current kernel copy). Such
    boots once sat for minutes in what looked like an interrupt storm: QEMU 7.2's TCG
    paying its self-modifying-code check on every store into pages that held code,
    under a translation cache that was never flushed (aq.qemu.cmdline.accel_option)."""
    assert arm.json("status", arm_vm)["state"] == "stopped"  # one aarch64 guest at a time
    arm.aq("new", "arm-b", "--arch", ARCH, "--cpus", VM_CPUS)
    bases = [i for i in arm.json("images") if i["kind"] == "base"]
    assert len(bases) == 1 and sorted(bases[0]["used_by"]) == ["arm-a", "arm-b"]
    arm.aq("start", "arm-b", "--timeout", BOOT_TIMEOUT, timeout=int(BOOT_TIMEOUT) + 60)
    assert arm.aq("exec", "arm-b", "--", "uname", "-m").stdout == "aarch64\n"
    arm.sh("arm-b", "echo c > /proc/sysrq-trigger", "--timeout", "10", check=False)
    deadline = time.monotonic() + 300
    while arm.json("status", "arm-b")["guest"] != "guest-panicked":
        assert time.monotonic() < deadline, "the panic was not reported"
        time.sleep(2)
    assert "panicked" in arm.aq("status", "arm-b").stdout
    arm.aq("stop", "arm-b", "--force")
    started = time.monotonic()
    arm.aq("start", "arm-b", "--timeout", BOOT_TIMEOUT, timeout=int(BOOT_TIMEOUT) + 60)
    arm.notes["firmware_boot_after_panic_s"] = time.monotonic() - started
    assert "firmware boot (" in _boot_paths(arm, "arm-b")[-1]
    assert arm.aq("exec", "arm-b", "--", "uname", "-m").stdout == "aarch64\n"
    assert "soft lockup" not in arm.aq("exec", "arm-b", "--", "dmesg").stdout
    arm.aq("stop", "arm-b", "--timeout", "300", timeout=600)
