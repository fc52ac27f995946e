"""A VM's QEMU invocation: a pure function of its record, its files and the host."""

from __future__ import annotations

from pathlib import Path

from aq import paths
from aq.guest.channel import SLOTS
from aq.paths import VmFiles, short_socket_path
from aq.qemu import cmdline
from aq.qemu.hostinfo import HostInfo
from aq.store.models import Vm


def _sock(path: Path) -> Path:
    return Path(short_socket_path(path))


def spec(vm: Vm, files: VmFiles) -> cmdline.MachineSpec:
    """What QEMU runs for `vm`: its disk, MAC, forwards, console, QMP and exec channel."""
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
            exec_sockets=[
                [_sock(files.exec_socket(slot, stream)) for stream in paths.EXEC_STREAMS]
                for slot in range(SLOTS)
            ],
        ),
        mac=vm.mac,
        forwards=[
            cmdline.Forward(f.protocol, f.host_addr, f.host_port, f.guest_port) for f in vm.forwards
        ],
        daemonize=True,
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


def argv(vm: Vm, files: VmFiles, host: HostInfo) -> list[str]:
    return cmdline.build(spec(vm, files), host)


def write_guest_files(vm: Vm, files: VmFiles) -> None:
    """Render the boot script and agent this start hands to the guest."""
    boot = (paths.GUEST_FILES / "boot.sh").read_text().replace("@NAME@", vm.name)
    agent = (paths.GUEST_FILES / "agent.sh").read_text().replace("@SLOTS@", str(SLOTS))
    files.fw_boot.write_text(boot)
    files.fw_agent.write_text(agent)
