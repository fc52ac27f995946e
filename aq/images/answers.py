"""The answer file for `setup-alpine -f`: a pure function of what the base should be."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

INTERFACES = """auto lo
iface lo inet loopback

auto eth0
iface eth0 inet dhcp
"""


@dataclass(frozen=True)
class Answers:
    hostname: str
    root_ssh_key: str
    repository: str  # e.g. https://dl-cdn.alpinelinux.org/alpine/v3.23/main
    disk: str = "/dev/vda"


def render(answers: Answers) -> str:
    """Shell variable assignments, as setup-alpine -c writes them."""
    values = {
        "KEYMAPOPTS": "none",
        "HOSTNAMEOPTS": answers.hostname,
        "DEVDOPTS": "mdev",
        "INTERFACESOPTS": INTERFACES,
        "DNSOPTS": "",
        "TIMEZONEOPTS": "UTC",
        "PROXYOPTS": "none",
        "APKREPOSOPTS": answers.repository,
        "USEROPTS": "none",
        "SSHDOPTS": "openssh",
        "ROOTSSHKEY": answers.root_ssh_key,
        "NTPOPTS": "none",
        "DISKOPTS": f"-m sys {answers.disk}",
        "LBUOPTS": "none",
        "APKCACHEOPTS": "none",
    }
    return "".join(f"{key}={shlex.quote(value)}\n" for key, value in values.items())
