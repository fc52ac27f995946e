"""Helpers for benchmarks: side-by-side timing, medians, a ratio line."""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable, Sequence


def time_command(argv: Sequence[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def interleaved(runs: int, *tasks: Callable[[], float]) -> list[list[float]]:
    """Run the tasks alternately `runs` times, so machine noise hits them alike."""
    samples: list[list[float]] = [[] for _ in tasks]
    for _ in range(runs):
        for i, task in enumerate(tasks):
            samples[i].append(task())
    return samples


def report(name: str, ours: list[float], reference: list[float], target: float, ref_name: str):
    """Print medians and the ratio; return whether the target is met."""
    a, b = statistics.median(ours), statistics.median(reference)
    ratio = a / b
    verdict = "OK" if ratio <= target else "OVER TARGET"
    print(f"{name}: median {a:.3f}s  |  {ref_name}: median {b:.3f}s")
    print(f"ratio {ratio:.2f} (target <= {target})  {verdict}")
    return ratio <= target


def compile_aq() -> None:
    """Write aq's bytecode, as every install does (pip, pipx, Homebrew), so a run from
    the checkout does not compile aq's modules from source each time (the reference,
    SQLAlchemy in site-packages, has its bytecode). PYTHONDONTWRITEBYTECODE would
    otherwise keep a checkout without it."""
    import compileall
    from pathlib import Path

    package = Path(__file__).resolve().parent.parent / "aq"
    assert compileall.compile_dir(package, quiet=1), "aq did not compile"


def instructions(argv: Sequence[str], env: dict | None = None) -> int | None:
    """Instructions the process executed (valgrind's callgrind; None without valgrind).

    Unlike wall or CPU time this does not move with the load of a shared host, so a
    ratio of two counts holds when medians of times do not. About 50 times slower than
    a plain run; the child processes it starts (qemu-img) are not counted, and aq's
    pause of the cycle collector (aq.cli.entry, 1 s of wall time) ends early in so slow
    a run, so aq's count includes collections that a normal run does not make.
    """
    import re
    import shutil

    if shutil.which("valgrind") is None:
        return None
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    return int(found.group(1)) if found else None
