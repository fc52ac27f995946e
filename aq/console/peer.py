"""Which local user is on the other end of a loopback TCP connection (Linux only).

The kernel lists every TCP socket of this network namespace, with the uid that made it,
in /proc/net/tcp (and /proc/net/tcp6). The client's own socket is the row whose local
address is the peer address the server sees and whose remote address is the server's.
Addresses are hex of the in-memory (network order) words printed as native integers, so
on little-endian machines each 4-byte word reads backwards; ports are plain big-endian hex.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from pathlib import Path

TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
TIME_WAIT = "06"  # such rows are no one's socket any more and show uid 0

Address = tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]


def decode_address(text: str, byteorder: str = sys.byteorder) -> Address:
    """`0100007F:1F90` -> (127.0.0.1, 8080); a v4-mapped IPv6 address becomes IPv4."""
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    if byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(raw)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address, int(port, 16)


def normalize(host: str, port: int) -> Address:
    address = ipaddress.ip_address(host.split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address, port


def find_uid(
    table: str, local: Address, remote: Address, byteorder: str = sys.byteorder
) -> int | None:
    """The uid of the one live socket in `table` from `local` to `remote`, else None."""
    uids = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8 or fields[3] == TIME_WAIT:
            continue
        try:
            here = decode_address(fields[1], byteorder)
            there = decode_address(fields[2], byteorder)
            uid = int(fields[7])
        except ValueError:
            continue
        if here == local and there == remote:
            uids.add(uid)
    return uids.pop() if len(uids) == 1 else None


def peer_uid(client: socket.socket) -> int | None:
    """The uid that owns the other end of `client` (an accepted loopback connection),
    or None where that cannot be told (not Linux, no /proc, no single matching row)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        local = normalize(*client.getpeername()[:2])
        remote = normalize(*client.getsockname()[:2])
    except (OSError, ValueError):
        return None
    found = set()
    for path in TABLES:
        try:
            text = path.read_text()
        except OSError:
            continue
        uid = find_uid(text, local, remote)
        if uid is not None:
            found.add(uid)
    return found.pop() if len(found) == 1 else None
