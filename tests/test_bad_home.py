"""A damaged, newer, read-only or full database or home, and numbers too big for any
field: each is one `Error: ... Hint: ...` line with the documented exit code."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.conftest import aq_process


def _aq(home: Path, *args: str) -> tuple[int, str]:
    proc = aq_process(*args, env={"AQ_HOME": str(home), "AQ_MIRROR": "http://127.0.0.1:9/x"})
    _out, err = proc.communicate(timeout=120)
    return proc.returncode, err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, err
    assert "unexpected" not in lines[0] and "Traceback" not in err
    return lines[0]


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "aq.db").write_bytes(b"not a database at all" * 100)
    code, err = _aq(home, "ls")
    line = _one_error_line(err)
    assert code == 1 and "damaged or is not a database" in line and "Hint:" in line
    assert (home / "aq.db").read_bytes() == b"not a database at all" * 100


def test_a_database_from_a_newer_aq_is_left_alone(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert _aq(home, "ls")[0] == 0
    with sqlite3.connect(home / "aq.db") as con:
        con.execute("UPDATE alembic_version SET version_num = '0999'")
    code, err = _aq(home, "ls")
    assert code == 1 and "written by a newer aq" in _one_error_line(err)
    with sqlite3.connect(home / "aq.db") as con:
        assert con.execute("SELECT version_num FROM alembic_version").fetchone() == ("0999",)


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 512 KiB tmpfs (tests run as root, as CI does); unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.fail("these tests need root to mount a small filesystem")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_read_only_home(small_disk: Path) -> None:
    home = small_disk / "home"
    assert _aq(home, "ls")[0] == 0
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    code, err = _aq(home, "config", "set", "mirror", "http://example.org")
    assert code == 1 and "Hint:" in _one_error_line(err)
    code, err = _aq(small_disk / "other", "ls")
    assert code == 1 and "Read-only file system" in _one_error_line(err)


def test_a_full_home(small_disk: Path) -> None:
    home = small_disk / "home"
    assert _aq(home, "ls")[0] == 0
    fd = os.open(small_disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass  # the disk is full now
    finally:
        os.close(fd)
    code, err = _aq(home, "config", "set", "mirror", "http://example.org/" + "a" * 20000)
    line = _one_error_line(err)
    assert code == 1 and ("full" in line or "could not write" in line), line


@pytest.mark.parametrize(
    "args",
    [
        ("new", "--memory", "99999999999999T", "x"),
        ("new", "--disk-size", "10000000000000000000T", "x"),
        ("new", "--disk-size", "100T", "x"),
        ("new", "--memory", "9" * 400 + "M", "x"),
        ("new", "-p", "99999999999999999999:80", "x"),
        ("new", "--cpus", "9999999999999999999999", "x"),
        ("images", "rm", "99999999999999999999999"),
    ],
)
def test_numbers_too_big_are_invalid_input(tmp_path: Path, args: tuple[str, ...]) -> None:
    code, err = _aq(tmp_path / "home", *args)
    assert code == 2, err
    assert "Error: " in err and "unexpected" not in err and "Traceback" not in err
