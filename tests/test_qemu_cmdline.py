"""The QEMU command line is a pure function of the VM record and the host: table tests."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from aq import machine
from aq.paths import VmFiles
from aq.qemu import cmdline
from aq.qemu.hostinfo import HostInfo, choose_accel
from aq.store.models import PortForward, Vm

FW = Path("/opt/homebrew/share/qemu/edk2-aarch64-code.fd")
HOSTS = {
    "mac-arm": HostInfo("darwin", "aarch64", "hvf", FW),
    "mac-intel": HostInfo("darwin", "x86_64", "hvf"),
    "linux-kvm": HostInfo("linux", "x86_64", "kvm"),
    "linux-tcg": HostInfo("linux", "x86_64", "tcg"),
    "linux-arm-tcg": HostInfo("linux", "aarch64", "tcg", FW),
}


def _vm() -> Vm:
    vm = Vm(
        name="web",
        cpus=2,
        memory_mib=1024,
        disk_path="/h/vms/web/disk.qcow2",
        mac="52:54:00:12:34:56",
        arch="x86_64",
        state="created",
        disk_size=1,
    )
    vm.forwards = [
        PortForward(protocol="tcp", host_addr="127.0.0.1", host_port=2222, guest_port=22),
        PortForward(protocol="udp", host_addr="0.0.0.0", host_port=5353, guest_port=53),
    ]
    return vm


def _argv(host: str) -> list[str]:
    return machine.argv(_vm(), VmFiles(Path("/h/vms/web")), HOSTS[host])


def _pairs(argv: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for a, b in itertools.pairwise(argv) if a.startswith("-")]


@pytest.mark.parametrize(
    ("host", "binary", "machine_arg", "accel", "cpu", "smp"),
    [
        ("mac-arm", "qemu-system-aarch64", "virt,highmem=on", "hvf", "host", "2"),
        ("mac-intel", "qemu-system-x86_64", cmdline.X86_MACHINE, "hvf", "host", "2"),
        ("linux-kvm", "qemu-system-x86_64", cmdline.X86_MACHINE, "kvm", "host", "2"),
        # TCG: the measured defaults (aq.qemu.cmdline.tcg_cpus, cpu_model)
        (
            "linux-tcg",
            "qemu-system-x86_64",
            cmdline.X86_MACHINE,
            "tcg,tb-size=64",
            "qemu64,-svm",
            "1",
        ),
        (
            "linux-arm-tcg",
            "qemu-system-aarch64",
            "virt,highmem=on",
            "tcg,tb-size=64",
            "max,pauth-impdef=on",
            "1",
        ),
    ],
)
def test_machine_accel_cpu_per_host(host, binary, machine_arg, accel, cpu, smp) -> None:
    argv = _argv(host)  # the VM asks for 2 vCPUs
    pairs = dict(_pairs(argv))
    assert argv[0] == binary
    assert pairs["-machine"] == machine_arg
    assert pairs["-accel"] == accel
    assert pairs["-cpu"] == cpu
    assert pairs["-smp"] == smp


@pytest.mark.parametrize(
    ("cpus", "accel", "expected"),
    [(1, "tcg", 1), (2, "tcg", 1), (8, "tcg", 1), (2, "kvm", 2), (8, "hvf", 8), (1, "kvm", 1)],
)
def test_tcg_caps_vcpus(cpus, accel, expected) -> None:
    assert cmdline.tcg_cpus(cpus, accel) == expected


def test_firmware_only_for_arm() -> None:
    assert ("-bios", str(FW)) in _pairs(_argv("mac-arm"))
    assert "-bios" not in _argv("linux-tcg")


def test_vm_devices_and_channels() -> None:
    argv = _argv("linux-tcg")
    joined = " ".join(argv)
    pairs = _pairs(argv)
    assert ("-smp", "1") in pairs and ("-m", "1024") in pairs  # TCG: one vCPU
    assert ("-device", "virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56") in pairs
    netdev = dict(pairs)["-netdev"]
    assert "hostfwd=tcp:127.0.0.1:2222-:22" in netdev
    assert "hostfwd=udp:0.0.0.0:5353-:53" in netdev
    assert "file=/h/vms/web/disk.qcow2,format=qcow2" in joined
    assert "path=/h/vms/web/console.sock,server=on,wait=off" in joined
    assert "logfile=/h/vms/web/console.log,logappend=on" in joined
    assert "path=/h/vms/web/qmp.sock" in joined and "chardev=qmp,mode=control" in joined
    assert ("-pidfile", "/h/vms/web/qemu.pid") in pairs and "-daemonize" in argv
    assert ("-device", "pvpanic-pci") in pairs and ("-action", "panic=pause") in pairs
    # The command channel's bus, with no port at boot: all are hot-added (aq.readiness).
    assert ("-device", "virtio-serial-pci,id=vser0,max_ports=31") in pairs
    assert "virtserialport" not in joined
    assert ("-fw_cfg", "name=opt/aq/agent,file=/h/vms/web/guest-agent.sh") in pairs
    assert ("-display", "none") in pairs
    # Only aq's devices: no default VGA, floppy or CD-ROM drive for the guest to probe.
    assert "-nodefaults" in argv


def test_installer_boots_iso_kernel() -> None:
    spec = cmdline.MachineSpec(
        name="aq-installer",
        cpus=1,
        memory_mib=1024,
        disks=[(Path("/w/d.qcow2"), "qcow2")],
        sockets=cmdline.Sockets(console=Path("/w/c.sock"), console_log=Path("/w/c.log")),
        cdrom=Path("/i/alpine.iso"),
        kernel=Path("/w/vmlinuz"),
        initrd=Path("/w/initramfs"),
        append="modules=loop quiet console=ttyS0,115200",
        no_reboot=True,
    )
    x86 = cmdline.build(spec, HOSTS["linux-tcg"])
    pairs = _pairs(x86)
    assert ("-kernel", "/w/vmlinuz") in pairs and ("-initrd", "/w/initramfs") in pairs
    assert ("-append", "modules=loop quiet console=ttyS0,115200") in pairs
    assert any("media=cdrom" in b and "/i/alpine.iso" in b for _, b in pairs)
    assert "-no-reboot" in x86 and "-daemonize" not in x86 and "-pidfile" not in x86
    # The CD-ROM on virtio-scsi on both architectures: Q35 runs without its SATA
    # controller, and the virt ISOs' initramfs carry virtio_scsi and sr_mod.
    assert "scsi-cd,bus=scsi0.0,drive=cd0" in x86 and "if=ide" not in " ".join(x86)
    arm = " ".join(cmdline.build(spec, HOSTS["mac-arm"]))
    assert "scsi-cd" in arm and "-bios" in arm


@pytest.mark.parametrize(
    ("system", "override", "kvm", "expected"),
    [
        ("darwin", None, False, "hvf"),
        ("linux", None, True, "kvm"),
        ("linux", None, False, "tcg"),
        ("linux", "tcg", True, "tcg"),
        ("darwin", "TCG", False, "tcg"),
    ],
)
def test_choose_accel(system, override, kvm, expected) -> None:
    assert choose_accel(system, override, kvm=kvm).accel == expected


def test_unknown_accelerator_is_invalid_input() -> None:
    from aq.errors import InvalidInput

    with pytest.raises(InvalidInput):
        choose_accel("linux", "xen", kvm=True)


def test_serial_device() -> None:
    assert cmdline.serial_device("x86_64") == "ttyS0"
    assert cmdline.serial_device("aarch64") == "ttyAMA0"


def test_the_x86_machine_leaves_out_what_a_text_mode_vm_never_uses() -> None:
    argv = _argv("linux-tcg")
    assert ("-machine", "q35,i8042=off,smbus=off,vmport=off,sata=off") in _pairs(argv)
    # Not the HPET: with neither it nor the ACPI PM timer, a TCG guest's clock
    # calibration can hang (QEMU's microvm, bench/BOOT-STALLS.md tenth pass).
    assert "hpet=off" not in " ".join(argv)
    # No IDE, floppy or SATA device of any kind: the disks are virtio.
    assert not any(a.startswith("if=ide") or "floppy" in a for a in argv)
