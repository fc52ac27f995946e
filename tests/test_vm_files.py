"""A VM's folder stays private and its console log stays bounded across starts."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

from aq import paths, power


def test_console_log_is_rotated_past_its_limit_and_private(tmp_path: Path) -> None:
    files = paths.VmFiles(tmp_path)
    assert power._console_offset(files) == 0
    assert stat.S_IMODE(files.console_log.stat().st_mode) == 0o600
    files.console_log.write_bytes(b"x" * 100)
    assert power._console_offset(files) == 100  # small: kept, this boot appends
    big = b"y" * (power.CONSOLE_LOG_MAX + 1)
    files.console_log.write_bytes(big)
    assert power._console_offset(files) == 0
    assert (tmp_path / "console.log.1").read_bytes() == big
    assert files.console_log.read_bytes() == b""


def test_restrict_to_owner_covers_sockets_and_logs(tmp_path: Path) -> None:
    log = tmp_path / "qemu.stderr"
    log.write_text("x")
    log.chmod(0o644)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "qmp.sock"))
    (tmp_path / "qmp.sock").chmod(0o750)  # what QEMU's daemon umask (027) leaves
    (tmp_path / "link").symlink_to(log)
    paths.restrict_to_owner(tmp_path)
    sock.close()
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "qmp.sock").lstat().st_mode) == 0o700 & 0o750


def test_open_private_creates_owner_only_files(tmp_path: Path) -> None:
    with paths.open_private(tmp_path / "a.log") as out:
        out.write(b"one\n")
    with paths.open_private(tmp_path / "a.log", append=True) as out:
        out.write(b"two\n")
    assert (tmp_path / "a.log").read_bytes() == b"one\ntwo\n"
    assert stat.S_IMODE((tmp_path / "a.log").stat().st_mode) == 0o600
