"""What people read, pinned exactly: `aq ls`, `aq status`, `aq history` and an error line.

The store is filled through the CLI, then the values that differ per run (MAC, ports,
times, pids) are set to fixed ones with plain SQL, so every character is checked.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from aq import host, paths
from aq.units import format_size
from tests.e2e import REPO

AT = "2026-11-28 11:50:18.123456"


@pytest.fixture
def pinned(aq, base_image):
    assert aq("new", "web", "-p", "8080:80").exit_code == 0
    assert aq("new", "db", "--cpus", "1", "--memory", "512M").exit_code == 0
    con = sqlite3.connect(paths.db_path())
    with con:
        for n, name in enumerate(["web", "db"]):
            vm_id = con.execute("SELECT id FROM vms WHERE name = ?", (name,)).fetchone()[0]
            con.execute(
                "UPDATE vms SET mac = ?, created_at = ?, updated_at = ? WHERE id = ?",
                (f"52:54:00:00:00:0{n + 1}", AT, AT, vm_id),
            )
            con.execute(
                "UPDATE port_forwards SET host_port = ? WHERE vm_id = ? AND purpose = 'ssh'",
                (2222 + n, vm_id),
            )
    con.close()
    return aq


def test_ls_table(pinned) -> None:
    result = pinned("ls")
    assert result.exit_code == 0
    assert result.stdout == (
        "NAME  STATE    SSH   CPUS  MEMORY  DISK  PORTS\n"
        "web   created  2222  2     1G      1G    8080->80\n"
        "db    created  2223  1     512M    1G    -\n"
    )


def test_status_text(pinned) -> None:
    disk = paths.vm_files("web").disk
    used = format_size(disk.stat().st_blocks * 512)
    base = next(Path(paths.images_dir()).glob("base-*.qcow2"))
    result = pinned("status", "web")
    assert result.exit_code == 0
    assert result.stdout == (
        "name       web\n"
        "state      created\n"
        f"arch       {host.guest_arch()}\n"
        "pid        -\n"
        "uptime     -\n"
        "accel      -\n"
        "last boot  -\n"
        "cpus       2\n"
        "memory     1G\n"
        "mac        52:54:00:00:00:01\n"
        "ports      2222->22, 8080->80\n"
        f"disk       {used} used of 1G\n"
        f"backing    {disk} <- {base}\n"
        "created    2026-11-28T11:50:18.123456Z\n"
    )


def test_history_table(pinned) -> None:
    assert pinned("rm", "db").exit_code == 0
    con = sqlite3.connect(paths.db_path())
    with con:  # events are append-only; this test alone lifts that to pin times and pids
        con.execute("DROP TRIGGER events_append_only_update")
        con.execute("UPDATE events SET at = ?, pid = 4242", (AT,))
    con.close()
    result = pinned("history")
    assert result.exit_code == 0
    assert result.stdout == (
        "TIME (UTC)               VM   EVENT   FROM     TO       PID   DETAIL\n"
        "2026-11-28 11:50:18.123  web  create  -        created  4242  base 3.23.6\n"
        "2026-11-28 11:50:18.123  db   create  -        created  4242  base 3.23.6\n"
        "2026-11-28 11:50:18.123  db   remove  created  removed  4242  ports released: "
        "2223->22/tcp\n"
    )
    assert pinned("history", "db").stdout.count("\n") == 3  # header and db's two events


def test_error_is_one_line_with_its_hint(pinned) -> None:
    result = pinned("status", "nope")
    assert result.exit_code == 3
    assert result.stdout == ""
    assert result.stderr == "Error: no VM named 'nope'. Hint: `aq ls` lists your VMs\n"


def _ls_into(stdout, aq_home: Path) -> subprocess.CompletedProcess:
    """`aq ls` as a user runs it, its stdout given (stderr captured as text)."""
    return subprocess.run(
        [sys.executable, "-m", "aq", "ls"],
        cwd=REPO,
        env={**os.environ, "AQ_HOME": str(aq_home)},
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )


def test_a_reader_that_went_away_ends_aq_quietly(aq_home: Path) -> None:
    # `aq ls | head -0`: stdout is a pipe nobody reads any more. aq ends as `cat` does
    # there (by SIGPIPE, nothing on stderr), not with an "unexpected" error line.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = _ls_into(write_end, aq_home)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (-signal.SIGPIPE, "")


def test_output_that_cannot_be_written_is_one_error_line(aq_home: Path) -> None:
    with open("/dev/full", "w") as full:
        done = _ls_into(full, aq_home)
    assert done.returncode == 1
    assert done.stderr == (
        "Error: cannot write the output: No space left on device. "
        "Hint: check where stdout and stderr go (a full disk?)\n"
    )


def test_a_closed_stdout_is_one_error_line_for_exec(monkeypatch) -> None:
    # `aq exec VM -- CMD >&-`: Python leaves sys.stdout None; aq says so, as cat would.
    from aq.cli.report import binary_stdio
    from aq.errors import OutputFailed

    monkeypatch.setattr(sys, "stdout", None)
    with pytest.raises(OutputFailed, match="stdout is closed"):
        binary_stdio()
    # ...and a plain exec's quick exit does not trip over the missing stream.
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.stdout = None\nfrom aq.cli import entry\nentry._leave(3)",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stderr) == (3, "")
