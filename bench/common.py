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


def installed_aq() -> tuple[str, str]:
    """(python, aq) of a regular install of this checkout, made once per source state.

    A checkout's development install is editable: every interpreter start in its
    virtual environment imports setuptools' finder (pathlib, importlib.util, re: about
    20 ms), which a user's install (pip, pipx, uv, Homebrew) never pays. A reference
    such as `python -c pass` run there is inflated by as much as aq is, so a ratio
    against it flatters aq. This builds (or reuses) a plain, non-editable install with
    its dependencies in ~/.cache/aq-bench/venvs/<source hash>, so a benchmark times
    the `aq` script a user runs against that environment's own interpreter.
    """
    import hashlib
    import os
    import venv
    from pathlib import Path

    checkout = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted([checkout / "pyproject.toml", *(checkout / "aq").rglob("*")]):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(checkout)).encode() + b"\0" + path.read_bytes())
    home = Path(os.environ.get("AQ_BENCH_VENVS", Path.home() / ".cache" / "aq-bench" / "venvs"))
    target = home / digest.hexdigest()[:16]
    python, script, done = target / "bin" / "python", target / "bin" / "aq", target / ".complete"
    if not done.exists():  # made now, or an earlier attempt was cut short
        print(f"making a regular install of this checkout in {target} ...", flush=True)
        venv.create(target, with_pip=True, clear=True)
        subprocess.run([python, "-m", "pip", "install", "-q", str(checkout)], check=True)
        subprocess.run([python, "-m", "compileall", "-q", target], check=True)
    done.touch()  # its time says when it was last used
    _drop_old_installs(home, KEEP_INSTALLS)
    return str(python), str(script)


KEEP_INSTALLS = 4  # source states whose installs are kept (about 100 MB each)


def _drop_old_installs(home, keep: int) -> None:
    """All but the `keep` most recently used installs: one per source state adds up."""
    import shutil

    def last_used(folder) -> float:
        marker = folder / ".complete"
        return marker.stat().st_mtime if marker.exists() else 0.0

    folders = sorted((f for f in home.iterdir() if f.is_dir()), key=last_used, reverse=True)
    for folder in folders[keep:]:
        shutil.rmtree(folder, ignore_errors=True)


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
