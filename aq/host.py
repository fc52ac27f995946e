"""Facts about the host aq runs on: OS and the guest architecture that matches it."""

from __future__ import annotations

import platform

from aq.errors import AqError

_ARCHES = {"x86_64": "x86_64", "amd64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}


def guest_arch(machine: str | None = None) -> str:
    """Alpine's name for the host's architecture: x86_64 or aarch64."""
    machine = (machine or platform.machine()).lower()
    try:
        return _ARCHES[machine]
    except KeyError:
        raise AqError(f"unsupported host architecture {machine!r}") from None
