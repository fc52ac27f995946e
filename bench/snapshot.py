"""Snapshots and saved states, as ratios measured in one run on the bench VM.

  resume / cold     `aq start` to ready after `aq suspend`, over `aq start --cold` to
                    ready of the same VM (target: at most 0.05; the strongest peer 0.10)
  8 clones / one    `aq new --from TAG --count 8` over one `aq new --from TAG`
                    (target: at most 3)
  live snapshot     `aq snapshot create` of the running 1 GiB VM: time and size on disk

Run: .venv/bin/python bench/snapshot.py  (TCG: a cold boot takes minutes)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.testvm import aq, ensure_vm, environment

NAME = "bench-snap"
TAG = "bench-snap-live"
TIMEOUT = "900"


def timed(*args: str) -> float:
    start = time.perf_counter()
    aq(*args)
    return time.perf_counter() - start


def main() -> None:
    with environment():
        ensure_vm(NAME)
        aq("stop", NAME, check=False)
        cold = timed("start", NAME, "--cold", "--timeout", TIMEOUT)
        aq("suspend", NAME)
        resumed = timed("start", NAME, "--timeout", TIMEOUT)
        aq("snapshot", "rm", TAG, check=False)
        snap_s = timed("snapshot", "create", NAME, TAG)
        row = next(r for r in json.loads(aq("snapshot", "ls", "--json").stdout) if r["tag"] == TAG)
        one = timed("new", "bench-one", "--from", TAG)
        eight = timed("new", "bench-fleet", "--from", TAG, "--count", "8")
        for name in ["bench-one", *(f"bench-fleet-{i}" for i in range(1, 9))]:
            aq("rm", name, check=False)
        aq("stop", NAME, "--force", check=False)
    print(f"cold start to ready   {cold:8.2f} s")
    print(f"resume to ready       {resumed:8.2f} s   ratio {resumed / cold:.3f} (target <= 0.05)")
    print(f"aq new --from (one)   {one:8.2f} s")
    print(f"aq new --count 8      {eight:8.2f} s   ratio {eight / one:.2f} (target <= 3)")
    print(
        f"live snapshot         {snap_s:8.2f} s   {row['size'] / 2**20:.0f} MiB on disk "
        f"({row['memory_size'] / 2**20:.0f} MiB memory)"
    )


if __name__ == "__main__":
    main()
