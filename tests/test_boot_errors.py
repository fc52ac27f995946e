"""A guest not ready in time is GuestTimeout (exit 8), chosen by what happened.

QEMU is a fake: a sleeping process whose command line names the VM's pid file (what
process.is_alive checks), and the command channel never answers. Its sibling case,
QEMU itself not starting in time (exit 1), is in tests/test_bracket.py.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from sqlalchemy import select

from aq import machine, paths, power, vm
from aq.errors import AqError, GuestTimeout
from aq.guest import channel
from aq.qemu import process
from aq.store.db import reading
from aq.store.models import Event


def _last_event(vm_id: int) -> tuple[str, str | None]:
    with reading() as session:
        last = session.scalars(
            select(Event).where(Event.vm_id == vm_id).order_by(Event.id.desc())
        ).first()
        return last.event, last.detail


@pytest.fixture
def silent_guest(base_image, monkeypatch):
    """A VM whose 'QEMU' runs but whose guest never answers; yields (vm, fakes, console)."""
    made = vm.create(vm.NewVm(name="mute"), base_image)
    files = paths.vm_files("mute")
    spawned: list[subprocess.Popen] = []
    console: list[bytes] = [b""]

    def fake_launch(argv, pidfile, *rest):
        proc = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)", str(pidfile)],
            stdin=subprocess.DEVNULL,
        )
        spawned.append(proc)
        pidfile.write_text(f"{proc.pid}\n")
        with files.console_log.open("ab") as log:  # after start took its offset
            log.write(console[0])
        deadline = time.monotonic() + 10
        while (ident := process.from_pidfile(pidfile)) is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        return ident

    monkeypatch.setattr(process, "launch", fake_launch)
    monkeypatch.setattr(channel, "ping", lambda files, timeout: False)
    plugged: list[range] = []
    monkeypatch.setattr(machine, "add_slots", lambda files, slots: plugged.append(slots))
    try:
        yield made, spawned, console, plugged
    finally:
        for proc in spawned:
            proc.kill()
            proc.wait(10)


def test_guest_not_ready_in_time_is_a_guest_timeout(silent_guest) -> None:
    made, spawned, _, plugged = silent_guest
    with pytest.raises(GuestTimeout) as caught:
        power.start("mute", timeout=1, accel="tcg")
    assert caught.value.exit_code == 8
    assert caught.value.message.startswith("the guest was not ready within 1s (no login prompt)")
    assert _last_event(made.id) == ("abort", "the guest was not ready within 1s (no login prompt)")
    assert spawned[0].wait(10) is not None  # the bracket's undo killed this boot's QEMU
    assert vm.get("mute").state == "stopped"
    assert plugged == []  # no sign of the guest's userland: slot 0 not plugged in yet


def test_a_login_prompt_without_a_channel_says_so(silent_guest) -> None:
    _, _, console, plugged = silent_guest
    console[0] = b"Welcome to Alpine Linux\r\nmute login: "
    with pytest.raises(GuestTimeout) as caught:
        power.start("mute", timeout=1, accel="tcg")
    assert "(the command channel did not answer)" in caught.value.message
    assert "mute login:" in caught.value.message  # the console's last lines are shown
    assert plugged == [range(1)]  # the guest's userland showed: slot 0 was plugged in


def test_a_kernel_panic_during_boot_ends_the_wait_at_once(silent_guest) -> None:
    # Early in boot the guest has no pvpanic driver yet, so only the console tells.
    made, spawned, console, _ = silent_guest
    console[0] = (
        b"[    2.9] VFS: Cannot open root device\r\n"
        b"[    3.0] Kernel panic - not syncing: VFS: Unable to mount root fs\x1b]0;x\x07\r\n"
    )
    began = time.monotonic()
    with pytest.raises(AqError) as caught:
        power.start("mute", timeout=600, accel="tcg")
    assert time.monotonic() - began < 60  # not the boot timeout
    assert not isinstance(caught.value, GuestTimeout)
    reason = "the guest's kernel panicked during boot: VFS: Unable to mount root fs\\x1b]0;x\\x07"
    assert caught.value.message.startswith(reason)  # the guest's bytes shown escaped
    assert _last_event(made.id) == ("abort", reason)
    assert spawned[0].wait(10) is not None  # this boot's QEMU was stopped
    assert vm.get("mute").state == "stopped"
