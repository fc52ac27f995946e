"""How VMs, forwards and events look in tables and in JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aq.cli.output import iso
from aq.netspec import DEFAULT_HOST_ADDR
from aq.units import format_size

if TYPE_CHECKING:
    from aq.store.models import PortForward, Vm


def ssh_port(vm: Vm) -> int | None:
    for fwd in vm.forwards:
        if fwd.purpose == "ssh":
            return fwd.host_port
    return None


def forward_text(fwd: PortForward) -> str:
    addr = "" if fwd.host_addr == DEFAULT_HOST_ADDR else f"{fwd.host_addr}:"
    proto = "" if fwd.protocol == "tcp" else f"/{fwd.protocol}"
    return f"{addr}{fwd.host_port}->{fwd.guest_port}{proto}"


def forward_dict(fwd: PortForward) -> dict[str, Any]:
    return {
        "protocol": fwd.protocol,
        "host_addr": fwd.host_addr,
        "host_port": fwd.host_port,
        "guest_port": fwd.guest_port,
        "auto": fwd.auto,
        "purpose": fwd.purpose,
    }


def vm_dict(vm: Vm) -> dict[str, Any]:
    return {
        "name": vm.name,
        "state": vm.state,
        "arch": vm.arch,
        "cpus": vm.cpus,
        "memory_mib": vm.memory_mib,
        "disk_path": vm.disk_path,
        "disk_size": vm.disk_size,
        "mac": vm.mac,
        "ssh_port": ssh_port(vm),
        "forwards": [forward_dict(f) for f in vm.forwards],
        "pid": vm.pid,
        "created_at": iso(vm.created_at),
        "updated_at": iso(vm.updated_at),
    }


def vm_row(vm: Vm) -> list[Any]:
    others = [forward_text(f) for f in vm.forwards if f.purpose != "ssh"]
    return [
        vm.name,
        vm.state,
        ssh_port(vm),
        vm.cpus,
        format_size(vm.memory_mib << 20),
        format_size(vm.disk_size),
        ", ".join(others) or "-",
    ]


VM_HEADERS = ["NAME", "STATE", "SSH", "CPUS", "MEMORY", "DISK", "PORTS"]
