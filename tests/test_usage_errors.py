"""Bad options and arguments are the README's one line with a hint, exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("args", "says", "hint"),
    [
        (("new", "x", "--cpus", "9999999999999999999999"), "'--cpus'", "aq new --help"),
        (("new", "x", "--bogus"), "No such option '--bogus'", "aq new --help"),
        (("nosuch",), "No such command 'nosuch'", "aq --help"),
        (("exec",), "Missing argument", "aq exec --help"),
    ],
)
def test_usage_errors_are_one_line(tmp_path: Path, args: tuple[str, ...], says, hint) -> None:
    env = {**os.environ, "AQ_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-m", "aq", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: ") and says in lines[0]
    assert lines[0].endswith(f"Hint: see `{hint}`")
    assert not (tmp_path / "home").exists()  # bad input changes nothing
