"""Command slots hot-added to a real QEMU (paused: no guest needed) over QMP."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from aq import machine
from aq.guest.channel import SLOTS
from aq.paths import EXEC_STREAMS, VmFiles
from aq.qemu.monitor import Monitor

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-system-x86_64") is None, reason="needs qemu-system-x86_64 (.ci/setup)"
)


def test_the_slots_a_vm_did_not_boot_with_are_plugged_in(tmp_path):
    files = VmFiles(tmp_path / "vm")
    files.root.mkdir()
    argv = [
        "qemu-system-x86_64",
        "-machine",
        "pc",
        "-accel",
        "tcg",
        "-S",
        "-display",
        "none",
        "-nodefaults",
        "-qmp",
        f"unix:{files.qmp},server=on,wait=off",
        "-device",
        "virtio-serial-pci,id=vser0,max_ports=31",
    ]
    qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not files.qmp.exists():
            assert qemu.poll() is None, qemu.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        late = range(SLOTS)
        machine.add_slots(files, late)
        for slot in late:
            for stream in EXEC_STREAMS:
                sock = files.exec_socket(slot, stream)
                assert sock.is_socket()
                assert sock.stat().st_mode & 0o077 == 0
        with Monitor(files.qmp) as qmp:
            names = {
                qmp.command(
                    "qom-get", path=f"/machine/peripheral/dev-exec{slot}{s}", property="name"
                )
                for slot in late
                for s in EXEC_STREAMS
            }
        assert names == {f"aq.exec.{slot}.{s}" for slot in late for s in EXEC_STREAMS}
    finally:
        qemu.kill()
        qemu.wait(10)
