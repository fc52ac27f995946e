"""Snapshots and saved states, as ratios measured in one run on one bench VM.

  resume / cold     `aq start` to ready after `aq suspend`, over `aq start --cold` to
                    ready of the same VM (target: at most 0.05; the strongest peer 0.10).
                    The cold start is the VM's second boot, after a clean `aq stop`, so
                    it is aq's fastest cold path (direct kernel boot), not a first boot.
  8 clones / one    `aq new --from TAG --count 8` over one `aq new --from TAG`, both
                    on the live snapshot (target: at most 3)
  live snapshot     `aq snapshot create` of the running 1 GiB VM: time and size on disk

Wall seconds on a shared host stretch with its load; QEMU's CPU seconds up to ready
are printed beside them (a TCG boot is CPU-bound). The run leaves nothing behind:
the VM, its clones and the snapshot are removed at the end (and at the start, if an
earlier run was interrupted).

Run: .venv/bin/python bench/snapshot.py  (TCG: two boots, several minutes)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.boot import cpu_seconds
from bench.testvm import aq, ensure_vm, environment

NAME = "bench-snap"
TAG = "bench-snap-live"
ONE = "bench-one"
FLEET = "bench-fleet"
COUNT = 8
TIMEOUT = "900"


def run(*args: str) -> subprocess.CompletedProcess:
    """`aq ARGS`, its stderr shown when it fails."""
    done = aq(*args, check=False)
    if done.returncode != 0:
        sys.exit(f"aq {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def timed(*args: str) -> float:
    start = time.perf_counter()
    run(*args)
    return time.perf_counter() - start


def started(*args: str) -> tuple[float, float, str]:
    """Wall seconds of `aq start ARGS`, QEMU's CPU seconds by then, and the history's
    `start` and `ready` details of that boot."""
    wall = timed("start", NAME, *args, "--timeout", TIMEOUT)
    pid = json.loads(run("status", NAME, "--json").stdout)["pid"]
    events = json.loads(run("history", NAME, "--json").stdout)
    begun = next(e for e in reversed(events) if e["event"] == "start")
    ready = next(e for e in reversed(events) if e["event"] == "ready")
    return wall, cpu_seconds(pid), f"{begun['detail']} | {ready['detail']}"


def clean() -> None:
    """Whatever an earlier (interrupted) run left: clones, the VM, the snapshot."""
    for name in [ONE, *(f"{FLEET}-{i}" for i in range(1, COUNT + 1)), NAME]:
        aq("rm", name, "--force", check=False)
    aq("snapshot", "rm", TAG, check=False)


def main() -> None:
    with environment():
        clean()
        ensure_vm(NAME)  # one vCPU, 1 GiB of memory (aq's default)
        memory = json.loads(run("status", NAME, "--json").stdout)["memory_mib"]
        print(f"warm-up: first boot of {NAME} ({memory} MiB), then a clean stop", flush=True)
        run("start", NAME, "--timeout", TIMEOUT)
        run("stop", NAME)
        cold, cold_cpu, cold_how = started("--cold")
        run("suspend", NAME)
        resumed, resumed_cpu, resumed_how = started()
        snap_s = timed("snapshot", "create", NAME, TAG)
        rows = json.loads(run("snapshot", "ls", "--json").stdout)
        row = next(r for r in rows if r["tag"] == TAG)
        one = timed("new", ONE, "--from", TAG)
        fleet = timed("new", FLEET, "--from", TAG, "--count", str(COUNT))
        clean()
    print(f"cold start to ready   {cold:8.2f} s  QEMU CPU {cold_cpu:6.2f} s  ({cold_how})")
    print(f"resume to ready       {resumed:8.2f} s  QEMU CPU {resumed_cpu:6.2f} s  ({resumed_how})")
    print(
        f"resume / cold         wall {resumed / cold:.3f}, CPU {resumed_cpu / cold_cpu:.3f}"
        "  (target <= 0.05)"
    )
    print(f"aq new --from (one)   {one:8.2f} s")
    print(f"aq new --count {COUNT}      {fleet:8.2f} s  ratio {fleet / one:.2f} (target <= 3)")
    print(
        f"live snapshot         {snap_s:8.2f} s  {row['size'] / 2**20:.1f} MiB on disk "
        f"({row['memory_size'] / 2**20:.1f} MiB memory, "
        f"{(row['size'] - row['memory_size']) / 2**20:.1f} MiB disk) of a {memory} MiB VM"
    )


if __name__ == "__main__":
    main()
