"""Picking MAC addresses and host ports inside the store's write transaction.

Callers hold SQLite's write lock (aq.store.db.writing), so two creators never pick the
same value; the database's unique constraints are the final word.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from aq.errors import Conflict
from aq.store.models import PortForward, Vm

SSH_PORT_BASE = 2222
AUTO_PORT_BASE = 10000
PORT_MAX = 65535
WILDCARD = {"0.0.0.0", "::"}


def random_mac() -> str:
    """A random locally administered unicast MAC address (first octet x2, x6, xA, xE)."""
    octets = bytearray(secrets.token_bytes(6))
    octets[0] = (octets[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in octets)


def allocate_mac(session: Session) -> str:
    """A MAC address no VM in the store has."""
    taken = set(session.scalars(select(Vm.mac)))
    while True:
        mac = random_mac()
        if mac not in taken:
            return mac


def port_is_free(addr: str, port: int, protocol: str = "tcp") -> bool:
    """Whether a program could bind `addr:port` right now (as QEMU does, SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(family, kind) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((addr, port))
        except OSError:
            return False
    return True


def reserved_ports(session: Session, addr: str, protocol: str, exclude_vm: int | None = None):
    """Host ports the store has given out that would clash with `addr`."""
    query = select(PortForward.host_port, PortForward.host_addr).where(
        PortForward.protocol == protocol
    )
    if exclude_vm is not None:
        query = query.where(PortForward.vm_id != exclude_vm)
    return {
        port
        for port, other in session.execute(query)
        if other == addr or other in WILDCARD or addr in WILDCARD
    }


def pick_port(
    session: Session,
    addr: str,
    protocol: str,
    start: int,
    also_taken: Iterable[int] = (),
    exclude_vm: int | None = None,
) -> int:
    """The lowest port from `start` that the store has not given out and is free now."""
    taken = reserved_ports(session, addr, protocol, exclude_vm) | set(also_taken)
    for port in range(start, PORT_MAX + 1):
        if port not in taken and port_is_free(addr, port, protocol):
            return port
    raise Conflict(f"no free {protocol} port on {addr} from {start} up")


def check_port_available(session: Session, addr: str, port: int, protocol: str) -> None:
    """Raise Conflict if another VM in the store already forwards this host port."""
    if port in reserved_ports(session, addr, protocol):
        raise Conflict(
            f"host port {addr}:{port}/{protocol} is already forwarded to another VM",
            hint="choose another host port, or let aq pick one with -p GUEST",
        )
