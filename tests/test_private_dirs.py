"""Private runtime directories: aq refuses a folder someone else could control.

/tmp/aq-UID is in a shared directory, so another local user could make it first (owned by
them, open to all, or a symlink to their own folder) and then see or redirect aq's sockets.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from aq import paths
from aq.errors import AqError

LONG = "x" * 120


@pytest.fixture
def tmpdir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """TMPDIR pointed at a fresh folder; returns where aq's link folder goes."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    return temp / f"aq-{os.getuid()}"


def _long_socket(tmp_path: Path) -> Path:
    folder = tmp_path / LONG
    folder.mkdir()
    return folder / "console.sock"


def test_a_long_socket_path_goes_through_a_private_link(tmpdir_env: Path, tmp_path) -> None:
    sock = _long_socket(tmp_path)
    short = paths.short_socket_path(sock)
    assert Path(short).parent.parent == tmpdir_env
    assert os.lstat(tmpdir_env).st_mode & 0o777 == 0o700
    assert Path(short).resolve() == sock.resolve()


def _foreign_owner(folder: Path) -> None:
    folder.mkdir(mode=0o700)
    os.chown(folder, 65534, 65534)


def _open_to_all(folder: Path) -> None:
    folder.mkdir()
    folder.chmod(0o777)


def _group_readable(folder: Path) -> None:
    folder.mkdir()
    folder.chmod(0o750)


def _symlink_elsewhere(folder: Path) -> None:
    target = folder.parent.parent / "elsewhere"
    target.mkdir(mode=0o700)
    folder.symlink_to(target)


def _a_file(folder: Path) -> None:
    folder.write_text("")


@pytest.mark.parametrize(
    ("prepare", "words"),
    [
        (_foreign_owner, "belongs to another user"),
        (_open_to_all, "open to other users"),
        (_group_readable, "open to other users"),
        (_symlink_elsewhere, "not a directory"),
        (_a_file, "not a directory"),
    ],
)
def test_an_unsafe_temp_folder_is_refused(tmpdir_env: Path, tmp_path, prepare, words) -> None:
    prepare(tmpdir_env)
    with pytest.raises(AqError) as caught:
        paths.short_socket_path(_long_socket(tmp_path))
    line = caught.value.one_line()
    assert str(tmpdir_env) in line and words in line
    assert "TMPDIR" in line and "\n" not in line
    target = tmpdir_env.resolve()
    assert not target.is_dir() or list(target.iterdir()) == []  # nothing written there
    if tmpdir_env.is_dir() and not tmpdir_env.is_symlink():
        assert os.lstat(tmpdir_env).st_mode & 0o777 in (0o700, 0o777, 0o750)  # not repaired


def test_make_private_dir_refuses_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "aq-home"
    link.symlink_to(target)
    with pytest.raises(AqError, match="not a directory"):
        paths.make_private_dir(link)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "missing")
    with pytest.raises(AqError, match="not a directory"):
        paths.make_private_dir(dangling)
    assert not (tmp_path / "missing").exists()


def test_make_private_dir_refuses_another_users_folder(tmp_path: Path) -> None:
    folder = tmp_path / "theirs"
    _foreign_owner(folder)
    with pytest.raises(AqError, match="belongs to another user"):
        paths.make_private_dir(folder)
    assert os.lstat(folder).st_uid == 65534


def test_make_private_dir_creates_and_tightens_its_own(tmp_path: Path) -> None:
    fresh = paths.make_private_dir(tmp_path / "a" / "b")
    assert os.lstat(fresh).st_mode & 0o777 == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    paths.make_private_dir(loose)
    assert os.lstat(loose).st_mode & 0o777 == 0o700


def test_a_link_that_is_not_ours_or_points_elsewhere_is_replaced(
    tmpdir_env: Path, tmp_path: Path
) -> None:
    sock = _long_socket(tmp_path)
    short = Path(paths.short_socket_path(sock))
    link = short.parent
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cases = [(os.getuid(), elsewhere), (65534, elsewhere), (65534, sock.parent)]
    for owner, target in cases:  # a wrong target of ours, then someone else's links
        link.unlink()
        link.symlink_to(target)
        os.lchown(link, owner, owner)
        assert Path(paths.short_socket_path(sock)) == short
        assert os.lstat(link).st_uid == os.getuid()
        assert os.readlink(link) == str(sock.parent)
    assert sorted(p.name for p in tmpdir_env.iterdir()) == [link.name]  # no leftovers
