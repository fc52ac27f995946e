"""Operations on VMs: create, look up, list, remove; each one records what it did.

The CLI calls these and formats what they return; they never print.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from aq import alloc, defaults, lifecycle, paths
from aq.errors import AqError, Conflict, InvalidInput, NotFound
from aq.images import catalog
from aq.lifecycle import State
from aq.names import random_name, validate_name
from aq.netspec import DEFAULT_HOST_ADDR, ForwardSpec
from aq.qemu import img
from aq.store.db import reading, writing
from aq.store.models import Event, Image, PortForward, Vm
from aq.units import format_size

SSH_GUEST_PORT = 22
MAX_DISK_SIZE = 64 << 40  # qcow2's limit
REMOVED = State.REMOVED.value


@dataclass(frozen=True)
class NewVm:
    """What `aq new` asks for; None means aq's default."""

    name: str | None = None
    cpus: int = defaults.CPUS
    memory_mib: int = defaults.MEMORY_MIB
    disk_size: int | None = None
    forwards: Sequence[ForwardSpec] = ()


def _live_query(name: str):
    return (
        select(Vm)
        .where(Vm.name == name, Vm.state != REMOVED)
        .options(selectinload(Vm.forwards), selectinload(Vm.base_image))
    )


def find(session: Session, name: str) -> Vm:
    """The VM called `name` that is not removed, or NotFound."""
    vm = session.scalars(_live_query(name)).first()
    if vm is None:
        raise NotFound(f"no VM named '{name}'")
    return vm


def get(name: str) -> Vm:
    """The VM called `name`, its record first made true (aq.reconcile)."""
    from aq.reconcile import reconcile

    reconcile(name)
    with reading() as session:
        return find(session, name)


def list_vms() -> list[Vm]:
    """Every VM that is not removed, oldest first, records first made true."""
    from aq.reconcile import reconcile

    reconcile()
    with reading() as session:
        query = (
            select(Vm)
            .where(Vm.state != REMOVED)
            .options(selectinload(Vm.forwards))
            .order_by(Vm.created_at, Vm.id)
        )
        return list(session.scalars(query))


def check_spec(spec: NewVm) -> None:
    """Refuse a malformed request before any slow work (download, install) starts."""
    if spec.name is not None:
        validate_name(spec.name)
        with reading() as session:
            _check_name_free(session, spec.name)
    _check_values(spec)


def _check_values(spec: NewVm) -> None:
    if not 1 <= spec.cpus <= 64:
        raise InvalidInput(f"invalid CPU count {spec.cpus}: use 1-64")
    if not 64 <= spec.memory_mib <= 1024 * 1024:
        raise InvalidInput(f"invalid memory size {spec.memory_mib} MiB: use 64M to 1T")
    if spec.disk_size is not None and spec.disk_size > MAX_DISK_SIZE:
        raise InvalidInput(
            f"invalid disk size {format_size(spec.disk_size)}: qcow2 holds at most 64T"
        )
    seen: set[tuple[str, int, str]] = set()
    for fwd in spec.forwards:
        if fwd.host_port is None:
            continue
        key = (fwd.host_addr, fwd.host_port, fwd.protocol)
        if key in seen:
            raise InvalidInput(f"host port {fwd.host_port}/{fwd.protocol} is given twice")
        seen.add(key)


def _name_taken(session: Session, name: str) -> bool:
    """Whether a VM that is not removed has this name (one light query: no loading)."""
    query = select(Vm.id).where(Vm.name == name, Vm.state != REMOVED).limit(1)
    return session.scalars(query).first() is not None


def _check_name_free(session: Session, name: str) -> None:
    if _name_taken(session, name):
        raise Conflict(
            f"a VM named '{name}' already exists",
            hint=f"choose another name, or remove it with `aq rm {name}`",
        )


def _unique_random_name(session: Session) -> str:
    for _ in range(100):
        name = random_name()
        if not _name_taken(session, name):
            return name
    raise Conflict("could not find a free random name", hint="give the VM a name")


def _add_forwards(session: Session, vm: Vm, specs: Sequence[ForwardSpec]) -> None:
    """Give `vm` its SSH forward and the requested ones, picking free host ports."""
    chosen: dict[tuple[str, str], set[int]] = {}

    def take(addr: str, proto: str, port: int | None, start: int) -> tuple[int, bool]:
        picked = chosen.setdefault((addr, proto), set())
        if port is None:
            port = alloc.pick_port(session, addr, proto, start, also_taken=picked)
            auto = True
        else:
            alloc.check_port_available(session, addr, port, proto)
            auto = False
        picked.add(port)
        return port, auto

    # Ports the user named are claimed before aq picks any for the others.
    for spec in sorted(specs, key=lambda s: s.host_port is None):
        port, auto = take(spec.host_addr, spec.protocol, spec.host_port, alloc.AUTO_PORT_BASE)
        vm.forwards.append(
            PortForward(
                protocol=spec.protocol,
                host_addr=spec.host_addr,
                host_port=port,
                guest_port=spec.guest_port,
                auto=auto,
            )
        )
    if not any(f.guest_port == SSH_GUEST_PORT and f.protocol == "tcp" for f in vm.forwards):
        port, _ = take(DEFAULT_HOST_ADDR, "tcp", None, alloc.SSH_PORT_BASE)
        vm.forwards.insert(
            0,
            PortForward(
                protocol="tcp",
                host_addr=DEFAULT_HOST_ADDR,
                host_port=port,
                guest_port=SSH_GUEST_PORT,
                auto=True,
                purpose="ssh",
            ),
        )
    else:
        for fwd in vm.forwards:
            if fwd.guest_port == SSH_GUEST_PORT and fwd.protocol == "tcp":
                fwd.purpose = "ssh"
                break


def _disk_size(spec: NewVm, base: Image) -> int:
    base_size = base.disk_size or img.virtual_size(Path(base.path))
    if spec.disk_size is None:
        return base_size
    if spec.disk_size < base_size:
        raise InvalidInput(
            f"disk size {format_size(spec.disk_size)} is smaller than the base's "
            f"{format_size(base_size)}",
            hint=f"use --disk-size {format_size(base_size)} or more",
        )
    return spec.disk_size


def _discard_orphan(folder: Path) -> None:
    """Remove a folder left by a crashed `aq new` or `aq rm` (no live VM owns it).

    Called under the write lock after the name was found free; `aq rm` moves a folder
    away under the same lock, so this never deletes a folder that a VM owns.
    """
    if folder.exists():
        shutil.rmtree(folder)


def create(spec: NewVm, base: Image) -> Vm:
    """Create a VM as a copy-on-write overlay on `base`; all or nothing.

    Name, MAC and ports are chosen and the disk is made while holding the write lock, so
    concurrent creators never collide; if anything fails, the VM's folder is removed
    (still under the lock) and nothing is recorded.
    """
    if spec.name is not None:
        validate_name(spec.name)
    _check_values(spec)  # the name is checked once, under the write lock below
    disk_size = _disk_size(spec, base)
    with writing() as session:
        if spec.name is None:
            name = _unique_random_name(session)
        else:
            name = spec.name
            _check_name_free(session, name)
        if session.get(Image, base.id) is None or not Path(base.path).exists():
            raise AqError(
                f"the base image {base.path} was removed meanwhile",
                hint="run the command again to make a new one",
            )
        files = paths.vm_files(name)
        paths.make_private_dir(paths.vms_dir())
        _discard_orphan(files.root)
        folder = paths.make_private_dir(files.root)
        try:
            vm = Vm(
                name=name,
                state=State.CREATED.value,
                arch=base.arch,
                cpus=spec.cpus,
                memory_mib=spec.memory_mib,
                disk_path=str(files.disk),
                disk_size=disk_size,
                mac=alloc.allocate_mac(session),
                base_image_id=base.id,
            )
            _add_forwards(session, vm, spec.forwards)
            img.create_overlay(files.disk, Path(base.path), base.format, disk_size)
            # Its first start boots the base's kernel directly, when aq has a copy.
            from aq import bootcopy

            bootcopy.adopt(paths.boot_copy_of(Path(base.path)), files)
            session.add(vm)
            session.flush()
            lifecycle.record(
                session, vm, lifecycle.CREATE_EVENT, None, vm.state, f"base {base.version}"
            )
        except BaseException:
            # Still under the write lock: no other `aq new` of this name can have made
            # this folder, so it is ours to delete.
            shutil.rmtree(folder, ignore_errors=True)
            raise
    return get(name)


@dataclass(frozen=True)
class HistoryRow:
    vm_id: int
    name: str
    event: Event


def history(name: str | None = None) -> list[HistoryRow]:
    """Every event, oldest first; for `name`, the events of every VM that had that name."""
    with reading() as session:
        query = select(Event, Vm.name).join(Vm, Event.vm_id == Vm.id).order_by(Event.id)
        if name is not None:
            query = query.where(Vm.name == name)
        rows = [
            HistoryRow(event.vm_id, vm_name, event) for event, vm_name in session.execute(query)
        ]
    if name is not None and not rows:
        raise NotFound(f"no VM named '{name}' has any history")
    return rows


def disk_usage(vm: Vm) -> int:
    """Bytes the VM's own overlay takes on the host's disk (not its virtual size)."""
    try:
        return Path(vm.disk_path).stat().st_blocks * 512
    except FileNotFoundError:
        return 0


def backing_chain(vm: Vm) -> list[str]:
    """The VM's disk and every image under it, nearest first."""
    with reading() as session:
        base = session.get(Image, vm.base_image_id) if vm.base_image_id else None
        return [vm.disk_path, *(image.path for image in catalog.chain(base))]


def record_host_key(name: str, host_key: str) -> None:
    """Keep the guest's SSH host key in the store (aq ssh checks against it)."""
    with writing() as session:
        vm = find(session, name)
        vm.ssh_host_key = host_key


def uptime(vm: Vm) -> float | None:
    """Seconds since this VM's QEMU started, while it runs."""
    import time

    if vm.pid_started is None or vm.state not in (State.BOOTING, State.RUNNING, State.STOPPING):
        return None
    return max(0.0, time.time() - vm.pid_started)


def guest_status(vm: Vm) -> str | None:
    """QEMU's view of the guest ('running', 'guest-panicked', ...) for a running VM."""
    if vm.state != State.RUNNING:
        return None
    from aq.qemu.monitor import query_status

    return query_status(paths.vm_files(vm.name).qmp)
