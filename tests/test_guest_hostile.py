"""`aq cp` from a hostile guest: crafted tar streams must change nothing outside DEST.

The guest's side is scripted: `_guest_kind` answers as a guest would, and the `tar c`
command's stdout is a crafted archive. Each test checks a sentinel file beside DEST
(content, mode, mtime) and the parent folder's listing, and what the user is told.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from aq.guest import channel, copy, untar
from aq.paths import VmFiles


def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **fields):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = fields.pop("mode", 0o644)
    for key, value in fields.items():
        setattr(info, key, value)
    return info, (io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _archive(*members) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, data)
    return buffer.getvalue()


@pytest.fixture
def scene(tmp_path: Path):
    """A host folder with DEST (empty) and a sentinel outside it."""
    outside = tmp_path / "host"
    outside.mkdir()
    sentinel = outside / "sentinel"
    sentinel.write_text("precious\n")
    sentinel.chmod(0o600)
    os.utime(sentinel, (1_000_000, 1_000_000))
    dest = outside / "dest"
    dest.mkdir()

    def snapshot():
        info = sentinel.stat()
        return (
            sentinel.read_text(),
            stat.S_IMODE(info.st_mode),
            info.st_mtime,
            sorted(p.name for p in outside.iterdir()),
            sorted(str(p.relative_to(tmp_path)) for p in tmp_path.iterdir()),
        )

    return outside, sentinel, dest, snapshot


def _guest_sends(monkeypatch, archive: bytes, kind: str = "d", real: str = "/root/x") -> None:
    monkeypatch.setattr(copy, "_guest_kind", lambda files, source: (kind, real))

    def run(files, argv, options):
        assert argv[:2] == ["tar", "c"]
        options.stdout.write(archive)
        return 0

    monkeypatch.setattr(channel, "run", run)


def _copy(tmp_path, dest: Path, source: str = "/root/x", recursive: bool = True) -> None:
    copy.from_guest(VmFiles(tmp_path / "vm"), source, dest, recursive)


HOSTILE = {
    "hard link to an absolute host path then a file of that name": lambda s: _archive(
        _member("x", tarfile.DIRTYPE, mode=0o755),
        _member("x/h", tarfile.LNKTYPE, linkname=str(s)),
        _member("x/h", data=b"owned\n", mode=0o777),
    ),
    "hard link to ../sentinel": lambda s: _archive(
        _member("x", tarfile.DIRTYPE),
        _member("x/h", tarfile.LNKTYPE, linkname="x/../../sentinel"),
    ),
    "symlink to the host folder then a file through it": lambda s: _archive(
        _member("x", tarfile.DIRTYPE),
        _member("x/l", tarfile.SYMTYPE, linkname=str(s.parent)),
        _member("x/l/sentinel", data=b"owned\n"),
    ),
    "a .. member": lambda s: _archive(
        _member("x", tarfile.DIRTYPE), _member("x/../../sentinel", data=b"owned\n")
    ),
    "an absolute member": lambda s: _archive(
        _member("x", tarfile.DIRTYPE), _member(str(s), data=b"owned\n")
    ),
    "a member outside the top name": lambda s: _archive(
        _member("x", tarfile.DIRTYPE), _member("y", data=b"owned\n")
    ),
    "a device node": lambda s: _archive(
        _member("x", tarfile.DIRTYPE), _member("x/null", tarfile.CHRTYPE, devmajor=1, devminor=3)
    ),
    "a FIFO": lambda s: _archive(_member("x", tarfile.DIRTYPE), _member("x/p", tarfile.FIFOTYPE)),
    "a top that is a link": lambda s: _archive(_member("x", tarfile.SYMTYPE, linkname="/")),
    "an absolute symlink": lambda s: _archive(
        _member("x", tarfile.DIRTYPE),
        _member("x/localtime", tarfile.SYMTYPE, linkname="/usr/share/zoneinfo/UTC"),
    ),
    "a relative symlink that climbs out": lambda s: _archive(
        _member("x", tarfile.DIRTYPE),
        _member("x/d", tarfile.DIRTYPE),
        _member("x/d/up", tarfile.SYMTYPE, linkname="../../sentinel"),
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_crafted_archive_changes_nothing_outside_dest(case, scene, tmp_path, monkeypatch):
    _outside, sentinel, dest, snapshot = scene
    before = snapshot()
    _guest_sends(monkeypatch, HOSTILE[case](sentinel))
    with pytest.raises(untar.UnsafeArchive) as raised:
        _copy(tmp_path, dest)
    assert raised.value.exit_code == 1
    assert "\n" not in raised.value.one_line()
    assert snapshot() == before
    assert list(dest.iterdir()) == []  # nothing half-copied


def test_setuid_bits_are_dropped_and_links_kept(scene, tmp_path, monkeypatch):
    outside, _sentinel, dest, snapshot = scene
    before = snapshot()
    archive = _archive(
        _member("x", tarfile.DIRTYPE, mode=0o755),
        _member("x/suid", data=b"#!/bin/sh\n", mode=0o6755),
        _member("x/same", tarfile.LNKTYPE, linkname="x/suid"),
        _member("x/d", tarfile.DIRTYPE),
        _member("x/d/back", tarfile.SYMTYPE, linkname="../suid"),
    )
    _guest_sends(monkeypatch, archive)
    _copy(tmp_path, dest)
    copied = dest / "x"
    assert stat.S_IMODE((copied / "suid").stat().st_mode) == 0o755
    assert (copied / "same").stat().st_ino == (copied / "suid").stat().st_ino
    assert os.readlink(copied / "d" / "back") == "../suid"  # inside the copy: kept
    assert snapshot() == before
    assert [p.name for p in outside.iterdir() if p.name.startswith(".aq-cp-")] == []


def test_merging_never_writes_through_a_symlink_in_dest(scene, tmp_path, monkeypatch):
    outside, sentinel, dest, snapshot = scene
    (dest / "x").mkdir()
    (dest / "x" / "sub").symlink_to(outside)  # a link already in DEST
    (dest / "x" / "sentinel").symlink_to(sentinel)
    before = snapshot()
    archive = _archive(
        _member("x", tarfile.DIRTYPE),
        _member("x/sentinel", data=b"replaced the link\n"),
        _member("x/sub", tarfile.DIRTYPE),
        _member("x/sub/sentinel", data=b"owned\n"),
    )
    _guest_sends(monkeypatch, archive)
    with pytest.raises(copy.AqError, match="exists and the copy is a folder"):
        _copy(tmp_path, dest)
    assert snapshot() == before
    assert os.readlink(dest / "x" / "sentinel") == str(sentinel)  # nothing moved
    # Without the folder clash, a file replaces the link itself, not its target.
    archive = _archive(_member("x", tarfile.DIRTYPE), _member("x/sentinel", data=b"new\n"))
    _guest_sends(monkeypatch, archive)
    _copy(tmp_path, dest)
    assert (dest / "x" / "sentinel").read_text() == "new\n"
    assert not (dest / "x" / "sentinel").is_symlink()
    assert snapshot() == before


def test_the_name_comes_from_the_source_not_the_guest(scene, tmp_path, monkeypatch):
    _outside, _sentinel, dest, snapshot = scene
    before = snapshot()
    _guest_sends(monkeypatch, _archive(_member("..", tarfile.DIRTYPE)), real="/root/..")
    with pytest.raises(untar.UnsafeArchive):
        _copy(tmp_path, dest)
    _guest_sends(monkeypatch, _archive(_member("x", data=b"hi\n")), kind="f", real="/etc/x")
    _copy(tmp_path, dest, source="/root/wanted", recursive=False)
    assert (dest / "wanted").read_text() == "hi\n"
    assert snapshot() == before


def test_a_huge_extended_header_is_refused_before_reading_it(tmp_path):
    header = tarfile.TarInfo("x")
    header.type = tarfile.XHDTYPE
    header.size = 1 << 32
    archive = io.BytesIO(header.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 1024)
    (tmp_path / "w").mkdir()
    with pytest.raises(untar.UnsafeArchive, match="extended header"):
        untar.unpack(archive, tmp_path / "w", "x")


def test_escape_sequences_in_a_refused_name_are_shown_escaped(scene, tmp_path, monkeypatch):
    _outside, _sentinel, dest, _snapshot = scene
    evil = "x/\x1b]0;pwned\x07\x1bP+q\x1b\\/../../../sentinel"
    _guest_sends(monkeypatch, _archive(_member("x", tarfile.DIRTYPE), _member(evil, data=b"")))
    with pytest.raises(untar.UnsafeArchive) as raised:
        _copy(tmp_path, dest)
    text = raised.value.one_line()
    assert "\x1b" not in text and "\x07" not in text and "\\x1b]0;pwned" in text


def test_a_nul_in_a_link_target_is_refused(scene, tmp_path, monkeypatch):
    _outside, _sentinel, dest, snapshot = scene
    before = snapshot()
    link = _member("x/l", tarfile.SYMTYPE)
    link[0].pax_headers = {"linkpath": "/etc\0/passwd"}
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(*_member("x", tarfile.DIRTYPE))
        tar.addfile(*link)
    _guest_sends(monkeypatch, archive.getvalue())
    with pytest.raises(untar.UnsafeArchive):
        _copy(tmp_path, dest)
    assert snapshot() == before
    assert list(dest.iterdir()) == []


def test_a_fifo_or_device_as_destination_is_refused_and_kept(tmp_path, monkeypatch):
    # aq places a copy by renaming it over the destination: over /dev/null that would
    # remove the device. Refused before the guest is asked anything.
    from aq.errors import InvalidInput

    asked = []
    monkeypatch.setattr(copy, "_guest_kind", lambda files, source: asked.append(source))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for dest in (fifo, Path("/dev/null")):
        before = dest.lstat()
        with pytest.raises(InvalidInput, match="is a device, FIFO or socket"):
            _copy(tmp_path, dest, source="/etc/hostname", recursive=False)
        after = dest.lstat()
        assert (after.st_mode, after.st_ino, after.st_rdev) == (
            before.st_mode,
            before.st_ino,
            before.st_rdev,
        )
    assert asked == []
    assert [p.name for p in tmp_path.iterdir()] == ["fifo"]  # no work folder left


def test_a_special_source_is_refused_with_a_way_to_stream_it(tmp_path, monkeypatch):
    # cp reads a device or FIFO; tar would copy the node itself (a /dev/zero in the VM).
    from aq.errors import InvalidInput

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InvalidInput, match="is a device, FIFO or socket, not a file"):
        copy.to_guest(VmFiles(tmp_path / "vm"), fifo, "/tmp/x", recursive=True)
    monkeypatch.setattr(copy, "_guest_kind", lambda files, source: ("s", "/dev/null"))
    with pytest.raises(InvalidInput, match="is a device, FIFO or socket in the VM"):
        _copy(tmp_path, tmp_path / "out", source="/dev/null", recursive=False)
    assert not (tmp_path / "out").exists()


def test_a_device_in_the_vm_is_never_replaced_by_a_copy(tmp_path, monkeypatch):
    # `aq cp x VM:/dev/null`: tar in the guest would replace the node with the file.
    from aq.errors import AqError, InvalidInput

    source = tmp_path / "null"
    source.write_text("hi\n")
    ran = []
    monkeypatch.setattr(channel, "run", lambda *a, **k: ran.append(a))
    for answer, refused in (("-s", InvalidInput), ("ds", InvalidInput), ("d\x1b[2J", AqError)):
        monkeypatch.setattr(copy, "_guest", lambda files, argv, stdin=None, a=answer: (0, a))
        with pytest.raises(refused) as caught:
            copy.to_guest(VmFiles(tmp_path / "vm"), source, "/dev", recursive=False)
        assert type(caught.value) is refused and "\x1b" not in str(caught.value)
    assert ran == []  # nothing was sent to be unpacked


def test_merging_never_replaces_a_device_or_fifo_in_dest(tmp_path, monkeypatch):
    from aq.errors import AqError

    dest = tmp_path / "dest"
    (dest / "x").mkdir(parents=True)
    os.mkfifo(dest / "x" / "f")
    (dest / "x" / "kept").write_text("mine\n")
    archive = _archive(
        _member("x", tarfile.DIRTYPE),
        _member("x/new", data=b"new\n"),
        _member("x/f", data=b"over the fifo\n"),
    )
    _guest_sends(monkeypatch, archive)
    with pytest.raises(AqError, match="is a device, FIFO or socket, which the copy"):
        _copy(tmp_path, dest)
    assert stat.S_ISFIFO((dest / "x" / "f").lstat().st_mode)
    assert sorted(p.name for p in (dest / "x").iterdir()) == ["f", "kept"]  # nothing moved
    assert [p.name for p in tmp_path.iterdir()] == ["dest"]  # no work folder left
