"""A VM's QEMU invocation: a pure function of its record, its files and the host."""

from __future__ import annotations

from pathlib import Path

from aq import paths
from aq.bootcopy import Copy
from aq.guest.channel import SLOTS
from aq.paths import VmFiles, short_socket_path
from aq.qemu import cmdline
from aq.qemu.hostinfo import HostInfo
from aq.store.models import Vm


def _sock(path: Path) -> Path:
    return Path(short_socket_path(path))


# Command-channel slots a VM boots with. None: every port at boot is device events for
# the guest's initramfs (3 ports cost 14 s of a 43 s TCG boot), so slot 0 is plugged in
# once the guest's userland starts and the rest once it is ready (aq.qemu.hotplug).
BOOT_SLOTS = 0


def spec(
    vm: Vm, files: VmFiles, boot: Copy | None = None, slots: int = BOOT_SLOTS
) -> cmdline.MachineSpec:
    """What QEMU runs for `vm`: its disk, MAC, forwards, console, QMP and `slots` slots of
    the exec channel; with `boot`, its own kernel directly instead of the firmware."""
    kernel, initrd = boot.files(files) if boot is not None else (None, None)
    return cmdline.MachineSpec(
        name=vm.name,
        cpus=vm.cpus,
        memory_mib=vm.memory_mib,
        disks=[(Path(vm.disk_path), "qcow2")],
        sockets=cmdline.Sockets(
            console=_sock(files.console),
            console_log=files.console_log,
            qmp=_sock(files.qmp),
            pidfile=files.pidfile,
            exec_bus=True,
            exec_sockets=[
                [_sock(files.exec_socket(slot, stream)) for stream in paths.EXEC_STREAMS]
                for slot in range(slots)
            ],
        ),
        mac=vm.mac,
        forwards=[
            cmdline.Forward(f.protocol, f.host_addr, f.host_port, f.guest_port) for f in vm.forwards
        ],
        daemonize=True,
        kernel=kernel,
        initrd=initrd,
        append=boot.append if boot is not None else "",
        extra=(
            "-fw_cfg",
            f"name=opt/aq/boot,file={files.fw_boot}",
            "-fw_cfg",
            f"name=opt/aq/agent,file={files.fw_agent}",
            *vmgenid(vm.arch),
        ),
    )


def vmgenid(arch: str) -> tuple[str, ...]:
    """QEMU's VM generation ID device (x86 ACPI): a new ID at every resume of a saved
    state, so the guest kernel reseeds its RNG (clones of one snapshot must not share
    random numbers). It must be there at the boot, since a resume keeps the boot's devices."""
    return ("-device", "vmgenid") if arch == "x86_64" else ()


def argv(
    vm: Vm, files: VmFiles, host: HostInfo, boot: Copy | None = None, slots: int = BOOT_SLOTS
) -> list[str]:
    return cmdline.build(spec(vm, files, boot, slots), host)


def plugged_slots_argv(files: VmFiles) -> list[str]:
    """Every slot's ports as command-line devices, as hotplug left them once the VM was
    ready (same order, so the same port numbers; same ids): a saved state of a VM
    resumes only on a QEMU with the very devices it had (aq.savedstate)."""
    args: list[str] = []
    for slot in range(SLOTS):
        for stream in paths.EXEC_STREAMS:
            port = cmdline.exec_port(slot, stream)
            args += cmdline.serial_port_args(port, _sock(files.exec_socket(slot, stream)))
    return args


def add_slots(files: VmFiles, slots: range) -> None:
    """Hot-add command-channel slots to the running VM (see BOOT_SLOTS for why)."""
    from aq.qemu.hotplug import add_serial_ports

    add_serial_ports(
        files.qmp,
        [
            (cmdline.exec_port(slot, stream), files.exec_socket(slot, stream))
            for slot in slots
            for stream in paths.EXEC_STREAMS
        ],
    )
    paths.restrict_to_owner(files.root)


def write_guest_files(vm: Vm, files: VmFiles) -> None:
    """Render the boot script and agent this start hands to the guest."""
    boot = (paths.GUEST_FILES / "boot.sh").read_text().replace("@NAME@", vm.name)
    agent = (paths.GUEST_FILES / "agent.sh").read_text().replace("@SLOTS@", str(SLOTS))
    files.fw_boot.write_text(boot)
    files.fw_agent.write_text(agent)
