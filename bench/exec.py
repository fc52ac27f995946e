"""aq exec and aq cp, each beside a raw round trip over the same command-channel socket.

  exec:  `aq exec NAME -- true` wall time (a whole CLI run) vs one ping/pong on the
         VM's control socket from an already running process plus a bare interpreter
         start (`python -c pass`); issue 13's target: at most 2x that sum. Also the
         same exec session run from this process, to tell the guest's part from aq's
         (and the ratio aq's own part alone would give), and a loop of execs back
         to back. Every timed task starts on an idle guest (SETTLE). Both `aq` and
         `python` are those of a regular install of this checkout (bench.common.
         installed_aq), as a user has them: a development install's interpreter
         start is about 20 ms slower, which would flatter the ratio.
  cp:    `aq cp FILE NAME:/tmp/x` throughput vs streaming the same bytes through the
         same channel into `cat > /dev/null` from an already running process.

Run: .venv/bin/python bench/exec.py  (needs a running VM; made and started here, and
     stopped at the end unless it was running already or AQ_BENCH_KEEP=1)
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import installed_aq, interleaved, time_command
from bench.testvm import aq, ensure_vm, environment

NAME = os.environ.get("AQ_BENCH_EXEC_VM", "bench-exec")
RUNS = 7
SETTLE = 0.3  # seconds of idle guest before each timed task
LOOP = 10
TARGET_RATIO = 2.0  # issue 13: aq exec / (raw round trip + interpreter start)
SIZE = 32 << 20


def main() -> int:
    python, script = installed_aq()
    with environment() as env:
        ensure_vm(NAME)
        started = '"running"' not in aq("status", NAME, "--json").stdout
        if started:
            aq("start", NAME, "--timeout", "900")
        try:
            return measure(env, python, script)
        finally:
            if started and not os.environ.get("AQ_BENCH_KEEP"):
                aq("stop", NAME)  # only a VM this run started (AQ_BENCH_KEEP=1 keeps it)


def measure(env: dict, python: str, script: str) -> int:
    from aq import paths
    from aq.guest import channel

    files = paths.vm_files(NAME)

    def ping() -> float:
        # Right after an exec the agent may still be closing that session's slot (it
        # then hangs up): a refused ping is retried, and only the answered one timed.
        for _ in range(20):
            start = time.perf_counter()
            if channel.ping(files, timeout=30):
                return time.perf_counter() - start
            time.sleep(0.1)
        raise AssertionError("the agent did not answer a ping")

    def in_process() -> float:
        # The same session from a running process: what the guest's agent costs,
        # with neither an interpreter start nor imports.
        with open(os.devnull, "wb") as sink:
            start = time.perf_counter()
            channel.run(files, ["true"], channel.ExecOptions(None, sink, sink, timeout=600))
            return time.perf_counter() - start

    def settled(task: Callable[[], float]) -> Callable[[], float]:
        # Each measurement starts on an idle guest, as the ping it is compared with
        # does: the agent re-arms a slot after every session (a few processes, about
        # 50 ms of guest time under TCG), which would otherwise land on the next task.
        def run() -> float:
            time.sleep(SETTLE)
            return task()

        return run

    # As a user runs them: the installed `aq` script, and that install's interpreter.
    exec_true = [script, "exec", NAME, "--", "true"]
    bare = [python, "-c", "pass"]
    time_command(exec_true, env)
    ours, raw, start, session = interleaved(
        RUNS,
        settled(lambda: time_command(exec_true, env)),
        settled(ping),
        settled(lambda: time_command(bare, env)),
        settled(in_process),
    )
    a, b, c = statistics.median(ours), statistics.median(raw), statistics.median(start)
    ratio = a / (b + c)
    print(
        f"aq exec -- true: median {a * 1000:.0f} ms | raw ping/pong on the same socket: "
        f"median {b * 1000:.1f} ms | interpreter start (python -c pass): median "
        f"{c * 1000:.0f} ms | ratio to both {ratio:.2f} (target <= {TARGET_RATIO}) "
        f"{'OK' if ratio <= TARGET_RATIO else 'OVER TARGET'}"
    )
    print(
        f"  of which the exec session from a running process (guest agent, no start or "
        f"imports): median {statistics.median(session) * 1000:.0f} ms"
    )
    # What aq itself costs on top of the guest's session (derived from the medians),
    # and the ratio if the session cost only one round trip: aq's own share of the
    # target, apart from the guest's process starts that dominate a session under TCG.
    own = a - statistics.median(session)
    print(
        f"  aq's own part (the whole run less the session): {own * 1000:.0f} ms; with a "
        f"session of one round trip the ratio would be {(own + b) / (b + c):.2f}"
    )
    in_a_loop = ["sh", "-c", f'for i in $(seq {LOOP}); do "$@"; done', "sh", *exec_true]
    loop = time_command(in_a_loop, env)
    print(
        f"  {LOOP} back to back (a script's loop, each run's re-arming on the next): "
        f"{loop / LOOP * 1000:.0f} ms each"
    )

    with tempfile.NamedTemporaryFile() as data:
        data.write(os.urandom(SIZE))
        data.flush()
        cp = [script, "cp", data.name, f"{NAME}:/tmp/bench.bin"]

        def stream() -> float:
            with open(data.name, "rb") as source, open(os.devnull, "wb") as sink:
                start = time.perf_counter()
                options = channel.ExecOptions(source, sink, sink, timeout=600)
                assert channel.run(files, ["sh", "-c", "cat > /dev/null"], options) == 0
                return time.perf_counter() - start

        ours, raw = interleaved(3, lambda: time_command(cp, env), stream)
    mb = SIZE / (1 << 20)
    a, b = mb / statistics.median(ours), mb / statistics.median(raw)
    print(
        f"aq cp {mb:.0f} MiB: {a:.1f} MiB/s | raw stream through the same channel: "
        f"{b:.1f} MiB/s | ratio {a / b:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
