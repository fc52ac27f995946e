"""A boot's duration: written into the `ready` event, read back by `aq status`."""

from __future__ import annotations

import json
import os

import pytest

from aq import boottime


@pytest.mark.parametrize(
    ("detail", "seconds"),
    [
        (boottime.ready_detail(71.26, 4242), 71.3),
        ("guest ready in 9 s (QEMU pid 1)", 9.0),
        ("guest ready (QEMU pid 12)", None),  # before durations were recorded
        ("QEMU is up; guest readiness not awaited (--no-wait)", None),
        (None, None),
    ],
)
def test_parse(detail, seconds) -> None:
    assert boottime.parse(detail) == seconds


def test_ready_detail_names_the_pid() -> None:
    assert boottime.ready_detail(71.26, 4242) == "guest ready in 71.3 s (QEMU pid 4242)"


def _boot(vm_id: int, detail: str) -> None:
    from aq import lifecycle
    from aq.qemu import process
    from aq.store.db import writing

    me = process.identity(os.getpid())
    with writing() as session:
        lifecycle.transition(session, vm_id, "start", owner_pid=me.pid, owner_started=me.started)
        lifecycle.transition(session, vm_id, "ready", detail, owner_pid=None, owner_started=None)
        lifecycle.transition(session, vm_id, "crash", "test")


def test_status_shows_the_last_boot(aq, base_image) -> None:
    from aq import vm

    made = vm.get(json.loads(aq("new", "boots", "--json").stdout)["name"])
    assert json.loads(aq("status", "boots", "--json").stdout)["last_boot_s"] is None
    assert "last boot  -" in aq("status", "boots").stdout
    _boot(made.id, boottime.ready_detail(80.04, 11))
    _boot(made.id, boottime.ready_detail(42.49, 12))
    assert json.loads(aq("status", "boots", "--json").stdout)["last_boot_s"] == 42.5
    assert "last boot  42.5 s" in aq("status", "boots").stdout
    _boot(made.id, "QEMU is up; guest readiness not awaited (--no-wait)")
    assert boottime.last_boot(made.id) is None  # the latest boot was not timed
