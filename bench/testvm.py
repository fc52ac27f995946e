"""A real VM for benchmarks: the test mirror served locally, a base installed once.

The aq home lives in $AQ_BENCH_HOME (default ~/.cache/aq-bench/home) and is reused
between runs, so only the first benchmark run pays for the base install. Set
AQ_TEST_MIRROR to use a real Alpine mirror instead of the test mirror.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def bench_home() -> Path:
    return Path(os.environ.get("AQ_BENCH_HOME", Path.home() / ".cache" / "aq-bench" / "home"))


@contextlib.contextmanager
def environment() -> Iterator[dict[str, str]]:
    """os.environ pointed at the bench home and a mirror, for this process and children."""
    real = os.environ.get("AQ_TEST_MIRROR")
    server = None
    env = {"AQ_HOME": str(bench_home()), "AQ_ACCEL": os.environ.get("AQ_ACCEL", "tcg")}
    if real:
        env["AQ_MIRROR"] = real
    else:
        from tests.mirror import build_mirror, start_server

        tree = build_mirror()
        server, url = start_server(tree.root)
        env.update(AQ_MIRROR=url, AQ_TRUSTED_KEY=str(tree.public_key))
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield dict(os.environ)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if server is not None:
            server.stop()


def aq(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aq", *args], cwd=REPO, check=check, capture_output=True, text=True
    )


def ensure_vm(name: str) -> None:
    """The VM `name` exists (made on the installed base, one vCPU for TCG)."""
    if aq("status", name, check=False).returncode != 0:
        print(f"creating {name} (the first run installs the base; minutes under TCG)", flush=True)
        aq("new", name, "--cpus", "1")
