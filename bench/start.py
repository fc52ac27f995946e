"""`aq start` to running, as a ratio to a bare QEMU reaching the login prompt.

The bare run uses the very command line aq builds for the same VM and disk (read from
aq's own builder, with the same direct kernel boot when aq would use it), and counts
until "login:" appears in the console log; aq's run counts until `aq start` returns
(the command channel answered, the other slots plugged in).
Runs alternate, and every boot ends in a clean ACPI shutdown so each starts alike.
Target: at most 1.05. Run: .venv/bin/python bench/start.py  (TCG: many minutes)
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.testvm import aq, ensure_vm, environment

NAME = "bench-start"
RUNS = 2
TIMEOUT = 900


def bare_boot() -> float:
    from aq import bootcopy, machine, paths, power, readiness, vm
    from aq.qemu import hostinfo, process
    from aq.qemu.monitor import Monitor

    record = vm.get(NAME)
    files = paths.vm_files(NAME)
    host = hostinfo.detect()
    boot, _ = bootcopy.usable(files)  # the same kernel, directly or not, as aq start
    argv = machine.argv(record, files, host, boot)
    argv[0] = hostinfo.qemu_binary(host.arch)
    machine.write_guest_files(record, files)
    offset = power._console_offset(files)  # as aq start does: rotated, owner-only
    start = time.perf_counter()
    ident = process.launch(argv, files.pidfile, files.cmdline, files.stderr)
    console = readiness.ConsoleWatch(files, offset)
    while not console.saw(readiness.LOGIN):
        if time.perf_counter() - start > TIMEOUT:
            raise SystemExit("bare QEMU did not reach login")
        time.sleep(0.05)
    took = time.perf_counter() - start
    with Monitor(files.qmp) as qmp:
        qmp.command("system_powerdown")
    if not process.wait_gone(ident, 180, files.pidfile):
        process.kill(ident, files.pidfile)
    return took


def aq_boot() -> float:
    start = time.perf_counter()
    aq("start", NAME, "--timeout", str(TIMEOUT))
    took = time.perf_counter() - start
    aq("stop", NAME)
    return took


def main() -> int:
    with environment():
        ensure_vm(NAME)
        aq("stop", NAME, check=False)
        bare, ours = [], []
        for run in range(RUNS):
            bare.append(bare_boot())
            ours.append(aq_boot())
            print(
                f"run {run + 1}: bare QEMU to login {bare[-1]:.1f}s, aq start {ours[-1]:.1f}s",
                flush=True,
            )
        ratio = statistics.median(ours) / statistics.median(bare)
        print(
            f"aq start to running: median {statistics.median(ours):.1f}s | bare QEMU to "
            f"login prompt: median {statistics.median(bare):.1f}s"
        )
        print(f"ratio {ratio:.3f} (target <= 1.05)  {'OK' if ratio <= 1.05 else 'OVER TARGET'}")
        subprocess.run([sys.executable, "-m", "aq", "history", NAME], check=False)
    return 0 if ratio <= 1.05 else 1


if __name__ == "__main__":
    sys.exit(main())
