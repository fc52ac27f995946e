"""How long a VM's boots take: written into the `ready` event's detail when a boot ends,
read back from the history by `aq status` (no extra column, so every past boot counts).
"""

from __future__ import annotations

import re

from sqlalchemy import select

from aq.store.db import reading
from aq.store.models import Event

READY = re.compile(r"\bready in (\d+(?:\.\d+)?) s\b")


def ready_detail(seconds: float, qemu_pid: int) -> str:
    """The `ready` event's detail: from QEMU's launch to the guest answering."""
    return f"guest ready in {seconds:.1f} s (QEMU pid {qemu_pid})"


def parse(detail: str | None) -> float | None:
    match = READY.search(detail or "")
    return float(match.group(1)) if match else None


def last_boot(vm_id: int) -> float | None:
    """Seconds the VM's latest boot took; None if it never booted or was not awaited."""
    with reading() as session:
        detail = session.scalars(
            select(Event.detail)
            .where(Event.vm_id == vm_id, Event.event == "ready")
            .order_by(Event.id.desc())
            .limit(1)
        ).first()
    return parse(detail)
