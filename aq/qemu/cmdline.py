"""The QEMU command line: a pure function of what to run and the host it runs on.

Nothing here touches the system, so every host/arch/accelerator combination is
table-tested. Per host:

  macOS, Apple Silicon   qemu-system-aarch64 -machine virt,highmem=on -accel hvf -cpu host
  macOS, Intel           qemu-system-x86_64  -machine pc,... -accel hvf -cpu host
  Linux with /dev/kvm    -accel kvm -cpu host
  anything else          -accel tcg (software emulation), one vCPU (see tcg_cpus)

x86_64 guests boot through QEMU's bundled SeaBIOS; aarch64 guests through the UEFI
firmware found in QEMU's own installation (aq.qemu.hostinfo).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aq.paths import EXEC_STREAMS
from aq.qemu.hostinfo import HostInfo


@dataclass(frozen=True)
class Forward:
    protocol: str
    host_addr: str
    host_port: int
    guest_port: int


@dataclass(frozen=True)
class Sockets:
    """Where QEMU should listen and log; None leaves a channel out."""

    console: Path
    console_log: Path
    qmp: Path | None = None
    pidfile: Path | None = None
    exec_sockets: Sequence[Sequence[Path]] = ()  # per slot: ctl, out, err
    exec_bus: bool = False  # the virtio-serial bus, even with no port at boot (hotplug)


@dataclass(frozen=True)
class MachineSpec:
    """What one QEMU process should run."""

    name: str
    cpus: int
    memory_mib: int
    disks: Sequence[tuple[Path, str]]  # (path, format); the first is /dev/vda
    sockets: Sockets
    mac: str | None = None
    forwards: Sequence[Forward] = ()
    cdrom: Path | None = None
    kernel: Path | None = None
    initrd: Path | None = None
    append: str | None = None
    daemonize: bool = False
    no_reboot: bool = False
    extra: Sequence[str] = field(default_factory=tuple)


SERIAL_BUS = "vser0"


@dataclass(frozen=True)
class SerialPort:
    ident: str  # QEMU's id for the chardev (the device is "dev-" + ident)
    name: str  # what the guest sees in /sys/class/virtio-ports/*/name


def serial_port_args(port: SerialPort, path: Path) -> list[str]:
    """A port as command-line devices: its socket chardev and its virtserialport, with
    the id hotplug gives it (aq.qemu.hotplug), so both ways make the same device."""
    device = f"virtserialport,bus={SERIAL_BUS}.0,chardev={port.ident},name={port.name}"
    device += f",id=dev-{port.ident}"
    return ["-chardev", chardev_socket(port.ident, path), "-device", device]


def exec_port(slot: int, stream: str) -> SerialPort:
    """The command channel's port for one slot and stream, at boot or hot-added."""
    return SerialPort(f"exec{slot}{stream}", f"aq.exec.{slot}.{stream}")


def serial_device(arch: str) -> str:
    """The guest's first serial port: ttyS0 on a PC, ttyAMA0 (PL011) on arm's virt."""
    return "ttyS0" if arch == "x86_64" else "ttyAMA0"


def binary_name(arch: str) -> str:
    return f"qemu-system-{arch}"


# Under TCG every vCPU is emulated. Two vCPUs (each in its own host thread) boot faster
# with the 64 MiB cache below (36-42 s to login against 44-54 s for one), but QEMU 7.2's
# multi-threaded TCG races the kernel's live code patching: one of about 60 such boots
# died early with `Oops: int3` in crng_make_state (the crng-ready static key being
# flipped while the other vCPU ran that code), as -cpu max with 2 vCPUs once did. A
# boot that can die is worse than a slower one (bench/BOOT-STALLS.md, fifth pass).
TCG_MAX_CPUS = 1


def tcg_cpus(cpus: int, accel: str) -> int:
    """The vCPUs QEMU gets: the VM's own number, but at most TCG_MAX_CPUS under TCG."""
    return min(cpus, TCG_MAX_CPUS) if accel == "tcg" else cpus


def cpu_model(arch: str, accel: str) -> str:
    """The host's CPU with an accelerator. Under TCG on x86_64, QEMU's plain qemu64
    without SVM: `-cpu max` booted the same disk in 126 s and 128 s against 85 s and
    76 s, with a 22 s soft lockup (its ERMS makes the kernel clear pages with
    `rep stosb`, which TCG runs byte by byte); qemu64's SVM flag only makes the guest
    load kvm and kvm_amd at every boot (1.25 s in the guest; a boot's QEMU CPU time
    29.6 s against 30.75 s, medians of 6 alternating rounds), and a nested hypervisor
    on TCG is of no use. On aarch64 TCG needs a model (the virt machine has no
    default): `max`, with pointer authentication's implementation-defined algorithm,
    because Alpine's kernel signs every return address (ARM64_PTR_AUTH_KERNEL) and TCG
    computes the architected QARMA5 cipher slowly (QEMU's docs recommend impdef)."""
    if accel in ("hvf", "kvm"):
        return "host"
    return "max,pauth-impdef=on" if arch == "aarch64" else "qemu64,-svm"


# TCG's translation cache, in MiB. QEMU 7.2's default (1 GiB) is never flushed during a
# boot, so every page that ever held executed code keeps its translated blocks, and the
# kernel clearing such a page for reuse pays QEMU's self-modifying-code check on every
# store (bench/BOOT-STALLS.md). A 64 MiB cache is flushed now and then, which drops
# those blocks: the same boot took 42-46 s of QEMU CPU time against 78-92 s by default
# (32 MiB: 53 s, 128 MiB: 48 s). On aarch64 guests booted through edk2 and GRUB the
# default cache did worse than slow them down: minutes at OpenRC's start with the timer
# interrupt pending at every instruction boundary (PC at el1h_64_irq, 13-38 interrupts
# taken a second instead of 500-1000, soft lockups) and 85% of the vCPU thread's time
# in that check (perf: page_collection_lock); a forced flush (through the gdbstub)
# ended it at once, and with 64 MiB it did not occur (bench/STORM.md).
TCG_TB_SIZE_MIB = 64


def accel_option(accel: str) -> str:
    """The -accel value: TCG with its translation cache sized for fast boots."""
    return f"tcg,tb-size={TCG_TB_SIZE_MIB}" if accel == "tcg" else accel


# The x86-64 machine: Q35 without what a text-mode VM never uses and its guest would
# probe, load drivers for and run ACPI code for at every boot: the PS/2 keyboard and
# mouse controller, the SMBus, VMware's I/O port and the SATA controller. Unlike the
# `pc` machine (i440FX), Q35 has no floppy controller or PIIX IDE to switch off, and
# the installer's CD-ROM sits on virtio-scsi as on arm. The same disk and kernel
# reached the login prompt in 21.6, 21.2, 22.2 s against 24.4, 24.0, 23.8 s on the
# leanest `pc` (TCG, alternating; bench/BOOT-STALLS.md, twelfth pass). The firmware,
# the ACPI reset and power button, the RTC and HPET stay: the guest calibrates its
# clock against them (QEMU's microvm, which has neither, hung in 3 of 12 TCG boots).
# A saved state resumes with the command line it was made with, machine included.
X86_MACHINE = "q35,i8042=off,smbus=off,vmport=off,sata=off"


def _machine(spec: MachineSpec, host: HostInfo) -> list[str]:
    accel = accel_option(host.accel)
    if host.arch == "aarch64":
        args = ["-machine", "virt,highmem=on", "-accel", accel]
        if host.firmware is not None:
            args += ["-bios", str(host.firmware)]
    else:
        args = ["-machine", X86_MACHINE, "-accel", accel]
    args += ["-cpu", cpu_model(host.arch, host.accel)]
    cpus = tcg_cpus(spec.cpus, host.accel)
    return [*args, "-smp", str(cpus), "-m", str(spec.memory_mib)]


def chardev_socket(ident: str, path: Path, log: Path | None = None) -> str:
    value = f"socket,id={ident},path={path},server=on,wait=off"
    if log is not None:
        value += f",logfile={log},logappend=on"
    return value


def _storage(spec: MachineSpec) -> list[str]:
    args: list[str] = []
    for index, (path, fmt) in enumerate(spec.disks):
        args += ["-drive", f"if=none,id=disk{index},file={path},format={fmt},discard=unmap"]
        args += ["-device", f"virtio-blk-pci,drive=disk{index}"]
    if spec.cdrom is not None:
        args += ["-device", "virtio-scsi-pci,id=scsi0"]
        args += ["-drive", f"if=none,id=cd0,media=cdrom,readonly=on,file={spec.cdrom}"]
        args += ["-device", "scsi-cd,bus=scsi0.0,drive=cd0"]
    return args


def _network(spec: MachineSpec) -> list[str]:
    netdev = "user,id=net0"
    for fwd in spec.forwards:
        netdev += f",hostfwd={fwd.protocol}:{fwd.host_addr}:{fwd.host_port}-:{fwd.guest_port}"
    device = "virtio-net-pci,netdev=net0"
    if spec.mac:
        device += f",mac={spec.mac}"
    return ["-netdev", netdev, "-device", device]


def _channels(spec: MachineSpec) -> list[str]:
    sockets = spec.sockets
    args = ["-chardev", chardev_socket("console", sockets.console, sockets.console_log)]
    args += ["-serial", "chardev:console"]
    if sockets.qmp is not None:
        args += [
            "-chardev",
            chardev_socket("qmp", sockets.qmp),
            "-mon",
            "chardev=qmp,mode=control",
        ]
    if sockets.exec_sockets or sockets.exec_bus:
        args += ["-device", f"virtio-serial-pci,id={SERIAL_BUS},max_ports=31"]
        for slot, streams in enumerate(sockets.exec_sockets):
            for stream, path in zip(EXEC_STREAMS, streams, strict=True):
                args += serial_port_args(exec_port(slot, stream), path)
    return args


def build(spec: MachineSpec, host: HostInfo) -> list[str]:
    """The full argv for QEMU (the binary name first, resolved by the caller)."""
    args = [binary_name(host.arch), "-name", f"guest={spec.name}"]
    args += _machine(spec, host)
    # Only the devices aq asks for: no VGA, floppy or empty CD-ROM drive, each of which
    # the guest would probe and load drivers for at every boot (under TCG about 7 s of
    # a 46 s boot, bench/BOOT-STALLS.md).
    args += ["-nodefaults", "-display", "none", "-monitor", "none", "-parallel", "none"]
    args += ["-rtc", "base=utc,clock=host"]
    args += ["-device", "virtio-rng-pci"]
    # A guest kernel panic pauses the VM and is reported (query-status: guest-panicked)
    # instead of vanishing as a shutdown.
    args += ["-device", "pvpanic-pci", "-action", "panic=pause"]
    args += _storage(spec)
    args += _network(spec)
    args += _channels(spec)
    if spec.kernel is not None:
        args += ["-kernel", str(spec.kernel)]
        if spec.initrd is not None:
            args += ["-initrd", str(spec.initrd)]
        if spec.append:
            args += ["-append", spec.append]
    if spec.no_reboot:
        args.append("-no-reboot")
    if spec.sockets.pidfile is not None:
        args += ["-pidfile", str(spec.sockets.pidfile)]
    if spec.daemonize:
        args.append("-daemonize")
    return [*args, *spec.extra]
