"""The QMP client against a real QEMU (tests/test_monitor_deadline.py: silent monitors)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from aq.qemu.monitor import Monitor


def test_a_real_qemu_answers(tmp_path: Path) -> None:
    sock = tmp_path / "qmp.sock"
    proc = subprocess.Popen(
        [
            "qemu-system-x86_64",
            "-machine",
            "none",
            "-display",
            "none",
            "-nodefaults",
            "-S",
            "-qmp",
            f"unix:{sock},server=on,wait=off",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with Monitor(sock, connect_timeout=10) as qmp:
            assert qmp.command("query-status")["status"] == "prelaunch"
            qmp.command("quit")
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
