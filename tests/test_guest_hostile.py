"""A hostile guest: crafted tar streams for `aq cp`, floods, an agent that cannot run.

The guest is scripted (tests/test_channel.py's FakeGuest plays the agent); every test
checks that nothing outside the destination changed and what the user was told.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import stat
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from aq.errors import EXEC_FAILURE
from aq.guest import channel, copy, untar
from tests.test_channel import FakeGuest, _accept_session, _read_line


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = ""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.mtime = kind, mode, link, 1_700_000_000
    return info


def _snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every entry under `folder` (not following links): mode, mtime, content."""
    seen = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        body = (
            path.read_bytes()
            if stat.S_ISREG(st.st_mode)
            else os.readlink(path).encode()
            if (stat.S_ISLNK(st.st_mode))
            else b""
        )
        seen[str(path.relative_to(folder))] = (st.st_mode, st.st_mtime_ns, body)
    return seen


@pytest.fixture
def world(tmp_path: Path):
    """A destination folder and, beside it, a sentinel file an attacker aims at."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("keep me\n")
    (outside / "secret").chmod(0o600)
    dest = tmp_path / "dest"
    dest.mkdir()
    return tmp_path, outside, dest


HOSTILE = {
    "hard link to an absolute path, then a file of that name": [
        (_member("top/x", tarfile.LNKTYPE, link="{outside}/secret"), None),
        (_member("top/x", mode=0o777), b"owned\n"),
    ],
    "hard link with ..": [
        (_member("top/x", tarfile.LNKTYPE, link="top/../../outside/secret"), None)
    ],
    "symlink to a folder outside, then a file through it": [
        (_member("top/d", tarfile.SYMTYPE, link="{outside}"), None),
        (_member("top/d/secret"), b"owned\n"),
    ],
    "relative symlink escaping, then a file through it": [
        (_member("top/d", tarfile.SYMTYPE, link="../../outside"), None),
        (_member("top/d/secret"), b"owned\n"),
    ],
    "a .. member": [(_member("top/../../outside/secret"), b"owned\n")],
    "an absolute member": [(_member("{outside}/secret"), b"owned\n")],
    "a member outside the top name": [(_member("other/secret"), b"owned\n")],
    "a FIFO": [(_member("top/fifo", tarfile.FIFOTYPE), None)],
    "a device node": [(_member("top/null", tarfile.CHRTYPE), None)],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_crafted_archives_are_refused_and_change_nothing(world, case: str) -> None:
    _root, outside, dest = world
    members = []
    for info, data in HOSTILE[case]:
        info.name = info.name.replace("{outside}", str(outside))
        info.linkname = info.linkname.replace("{outside}", str(outside))
        members.append((info, data))
    before_outside, before_dest = _snapshot(outside), _snapshot(dest)
    work = dest / "work"
    work.mkdir()
    with pytest.raises(untar.UnsafeArchive) as refused:
        untar.unpack(io.BytesIO(_tar(*members)), work, "top")
    assert refused.value.one_line().startswith("refused ")
    assert "\n" not in refused.value.one_line()
    assert _snapshot(outside) == before_outside
    assert not any(p.is_file() and "owned" in p.read_text() for p in dest.rglob("*"))
    assert before_dest == {}


def test_setuid_bits_are_dropped_and_links_inside_kept(world) -> None:
    _, _, dest = world
    archive = _tar(
        (_member("top", tarfile.DIRTYPE, mode=0o755), None),
        (_member("top/tool", mode=0o6755), b"#!/bin/sh\n"),
        (_member("top/again", tarfile.LNKTYPE, link="top/tool"), None),
        (_member("top/rel", tarfile.SYMTYPE, link="tool"), None),
    )
    result = untar.unpack(io.BytesIO(archive), dest, "top")
    assert stat.S_IMODE((result / "tool").stat().st_mode) == 0o755
    assert (result / "again").read_bytes() == b"#!/bin/sh\n"
    assert os.readlink(result / "rel") == "tool"


def test_merging_never_follows_a_symlink_in_the_destination(world) -> None:
    root, outside, dest = world
    (dest / "top").mkdir()
    (dest / "top" / "etc").symlink_to(outside)
    staging = root / "staging"
    staging.mkdir()
    tree = untar.unpack(
        io.BytesIO(
            _tar(
                (_member("top/etc", tarfile.DIRTYPE, mode=0o755), None),
                (_member("top/etc/secret"), b"owned\n"),
            )
        ),
        staging,
        "top",
    )
    before = _snapshot(outside)
    with pytest.raises(untar.AqError, match="symbolic link"):
        untar.merge(tree, dest / "top")
    assert _snapshot(outside) == before


def _tar_agent(archive: bytes) -> Callable[[dict[str, socket.socket]], None]:
    """An agent whose `tar c` sends `archive`."""

    def tar(conns: dict[str, socket.socket]) -> None:
        ctl = conns["ctl"]
        _accept_session(conns, _read_line(ctl))
        assert _read_line(ctl) == b"E"
        conns["out"].sendall(archive)
        ctl.sendall(b"R 0 %d 0\n" % len(archive))
        time.sleep(0.5)  # the real agent keeps its ports open after R

    return tar


def test_aq_cp_from_a_hostile_guest_leaves_nothing_behind(aq_home: Path, world, monkeypatch):
    _root, outside, dest = world
    archive = _tar(
        (_member("top", tarfile.DIRTYPE, mode=0o755), None),
        (_member("top/ok"), b"fine\n"),
        (_member("top/x", tarfile.LNKTYPE, link=f"{outside}/secret"), None),
    )
    monkeypatch.setattr(copy, "_guest_kind", lambda files, source: ("d", "/srv/top"))
    guest = FakeGuest(aq_home / "vm", _tar_agent(archive))
    before = _snapshot(outside)
    try:
        with pytest.raises(untar.UnsafeArchive, match="hard link"):
            copy.from_guest(guest.files, "/srv/top", dest, recursive=True)
    finally:
        guest.close()
    assert _snapshot(outside) == before
    assert list(dest.iterdir()) == []  # nothing half-copied, no work folder left


def test_aq_cp_names_the_copy_after_the_source_not_the_guest(aq_home, world, monkeypatch):
    _root, _outside, dest = world
    archive = _tar(
        (_member("evil", tarfile.DIRTYPE, mode=0o755), None), (_member("evil/f"), b"data\n")
    )
    monkeypatch.setattr(copy, "_guest_kind", lambda files, source: ("d", "/srv/evil"))
    guest = FakeGuest(aq_home / "vm", _tar_agent(archive))
    try:
        copy.from_guest(guest.files, "/srv/wanted", dest, recursive=True)
    finally:
        guest.close()
    assert sorted(p.name for p in dest.iterdir()) == ["wanted"]
    assert (dest / "wanted" / "f").read_bytes() == b"data\n"


def _agent_answering(line: bytes) -> Callable[[dict[str, socket.socket]], None]:
    def play(conns: dict[str, socket.socket]) -> None:
        ctl = conns["ctl"]
        _accept_session(conns, _read_line(ctl))
        ctl.sendall(line)
        time.sleep(0.5)

    return play


def test_an_agent_that_cannot_run_the_command_fails_at_once(aq_home: Path) -> None:
    guest = FakeGuest(
        aq_home / "vm", _agent_answering(b"F no work folder: /tmp is \x1b]0;x\x07 read-only\n")
    )
    began = time.monotonic()
    with pytest.raises(channel.AgentFailed) as failed:
        channel.run(guest.files, ["true"], channel.ExecOptions(None, io.BytesIO(), io.BytesIO()))
    guest.close()
    assert time.monotonic() - began < 5
    assert failed.value.exit_code == EXEC_FAILURE
    assert "\x1b" not in failed.value.one_line() and "read-only" in failed.value.one_line()


def test_an_endless_control_line_is_refused_fast(aq_home: Path) -> None:
    def flood(conns: dict[str, socket.socket]) -> None:
        ctl = conns["ctl"]
        _accept_session(conns, _read_line(ctl))
        with contextlib.suppress(OSError):  # the host gives up, as it should
            ctl.sendall(b"R" + b"9" * (64 << 20))

    guest = FakeGuest(aq_home / "vm", flood)
    began = time.monotonic()
    with pytest.raises(channel.ChannelError, match="longer than"):
        channel.run(guest.files, ["true"], channel.ExecOptions(None, io.BytesIO(), io.BytesIO()))
    took = time.monotonic() - began
    guest.close()
    assert took < 5, took


def test_capture_is_bounded(aq_home: Path) -> None:
    def flood(conns: dict[str, socket.socket]) -> None:
        ctl = conns["ctl"]
        _accept_session(conns, _read_line(ctl))
        with contextlib.suppress(OSError):
            conns["out"].sendall(b"x" * (4 << 20))

    guest = FakeGuest(aq_home / "vm", flood)
    with pytest.raises(channel.ChannelError, match="more than"):
        channel.capture(guest.files, ["cat", "/dev/zero"], limit=1 << 20)
    guest.close()
