"""The e2e fixtures' last line of defence (tests.e2e.stop_all_qemu): a QEMU the store
no longer records is still stopped, found by its VM's pid file and nothing else."""

from __future__ import annotations

import subprocess
import sys
import time

from aq.qemu import process
from tests.e2e import stop_all_qemu

SLEEPER = "import time; time.sleep(120)"


def _spawn(*extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SLEEPER, *extra])


def _gone(proc: subprocess.Popen) -> bool:
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_an_unrecorded_qemu_named_by_its_pid_file_is_stopped(tmp_path) -> None:
    pidfile = tmp_path / "vms" / "leaked" / "qemu.pid"
    pidfile.parent.mkdir(parents=True)
    leaked = _spawn("-pidfile", str(pidfile))  # stands in for QEMU: its argv names the file
    try:
        pidfile.write_text(f"{leaked.pid}\n")
        deadline = time.monotonic() + 10
        while process.from_pidfile(pidfile) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stop_all_qemu(tmp_path) == [leaked.pid]
        assert _gone(leaked)
    finally:
        leaked.kill()
        leaked.wait()


def test_a_pid_file_naming_another_process_kills_nothing(tmp_path) -> None:
    pidfile = tmp_path / "vms" / "reused" / "qemu.pid"
    pidfile.parent.mkdir(parents=True)
    stranger = _spawn()  # a reused pid: its command line names no pid file
    try:
        pidfile.write_text(f"{stranger.pid}\n")
        assert stop_all_qemu(tmp_path) == []
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()
