"""Port-forward specs as users write them: `-p 8080:80`, `-p 80`, `-p 0.0.0.0:53:53/udp`.

Host addresses are IPv4: QEMU's user network (7.2, as on Debian 12) refuses IPv6 ones.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from aq.errors import InvalidInput

DEFAULT_HOST_ADDR = "127.0.0.1"
_SPEC = re.compile(
    r"(?:(?P<addr>\[[0-9a-fA-F:.]+\]|\d+\.\d+\.\d+\.\d+):)?(?:(?P<host>\d+):)?(?P<guest>\d+)"
    r"(?:/(?P<proto>[a-z]+))?"
)


@dataclass(frozen=True)
class ForwardSpec:
    """A requested forward; `host_port` None means aq picks one."""

    guest_port: int
    host_port: int | None = None
    host_addr: str = DEFAULT_HOST_ADDR
    protocol: str = "tcp"

    def __str__(self) -> str:
        host = "auto" if self.host_port is None else str(self.host_port)
        return f"{self.host_addr}:{host}->{self.guest_port}/{self.protocol}"


def _port(text: str, what: str, spec: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise InvalidInput(
            f"invalid port spec {spec!r}: {what} port {value} is outside 1-65535",
            hint="write HOST:GUEST, GUEST, or ADDR:HOST:GUEST, optionally with /udp",
        )
    return value


def parse_forward(spec: str) -> ForwardSpec:
    """Parse one `-p` value; raise InvalidInput with an example when malformed."""
    hint = "write HOST:GUEST (8080:80), GUEST (80), or ADDR:HOST:GUEST, optionally with /udp"
    match = _SPEC.fullmatch(spec.strip())
    if not match:
        raise InvalidInput(f"invalid port spec {spec!r}", hint=hint)
    proto = match["proto"] or "tcp"
    if proto not in ("tcp", "udp"):
        raise InvalidInput(f"invalid port spec {spec!r}: protocol must be tcp or udp", hint=hint)
    addr = match["addr"]
    if addr is not None:
        if match["host"] is None:
            raise InvalidInput(
                f"invalid port spec {spec!r}: an address needs a host port", hint=hint
            )
        try:
            address = ipaddress.ip_address(addr.strip("[]"))
        except ValueError:
            raise InvalidInput(f"invalid port spec {spec!r}: bad address", hint=hint) from None
        if address.version != 4:
            # QEMU 7.2's user network parses hostfwd addresses as IPv4 only ("Bad host
            # address"), so refuse here rather than fail at the next start.
            raise InvalidInput(
                f"invalid port spec {spec!r}: QEMU forwards only IPv4 host addresses",
                hint="use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)",
            )
        addr = str(address)
    host = _port(match["host"], "host", spec) if match["host"] else None
    return ForwardSpec(
        guest_port=_port(match["guest"], "guest", spec),
        host_port=host,
        host_addr=addr or DEFAULT_HOST_ADDR,
        protocol=proto,
    )
