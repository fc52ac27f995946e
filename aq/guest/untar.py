"""Unpacking a tar stream that a guest made, which may be hostile, into one folder.

Python's tarfile filters differ between patch releases and check names rather than what
a link points at, so aq walks the archive itself. Every member must lie under the one
top name aq asked the guest for; it is refused (by name, nothing kept) when it is
absolute or has a `..`, is a device, FIFO or socket, is a hard link to anything but a
regular file unpacked earlier from the same archive, or is a symbolic link whose target
is absolute or leaves the copied tree (such as /etc/localtime: copy its target instead).
Each path is opened component by component with O_NOFOLLOW below a directory that aq
created itself, so nothing is ever written through a link, and files are created
exclusively, never opened for writing where something already is. Modes keep only the
permission bits (no setuid, setgid or sticky bit); owners are not applied.

`merge` then moves a finished tree into place, never following a symlink that stands
in the destination, after checking every collision before it moves anything.
"""

from __future__ import annotations

import os
import posixpath
import stat
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from aq.errors import AqError
from aq.safetext import for_terminal

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeArchive(AqError):
    """The guest's archive holds a member that could write outside the destination."""

    default_hint = "the guest may be compromised; nothing was copied"


def _refuse(name: str, why: str) -> UnsafeArchive:
    return UnsafeArchive(f"refused {for_terminal(name, one_line=True)!s} from the VM: {why}")


def _parts(name: str, top: str) -> list[str]:
    """The member's path components, checked to lie under `top`."""
    if name.startswith("/"):
        raise _refuse(name, "an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(name, "a path with '..'")
    if not parts or parts[0] != top:
        raise _refuse(name, f"not inside {for_terminal(top, one_line=True)}")
    return parts


@contextmanager
def _dir_fd(path: Path, follow: bool = False) -> Iterator[int]:
    """An fd for the folder `path`; `follow` only for a path the user named."""
    fd = os.open(path, (DIR_FLAGS & ~os.O_NOFOLLOW) if follow else DIR_FLAGS)
    try:
        yield fd
    finally:
        os.close(fd)


def _open_parent(root_fd: int, parts: list[str], name: str) -> int:
    """A new fd for the folder that holds `parts[-1]`, reached without following links."""
    fd = os.dup(root_fd)
    try:
        for part in parts[:-1]:
            try:
                with suppress(FileExistsError):
                    os.mkdir(part, 0o700, dir_fd=fd)  # a folder the archive left implicit
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError:
                raise _refuse(
                    name, "its folder is not a folder unpacked from the archive"
                ) from None
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _symlink_stays_inside(parts: list[str], target: str) -> bool:
    if not target or target.startswith("/"):
        return False
    resolved = posixpath.normpath(posixpath.join(*parts[:-1], target))
    return resolved == parts[0] or resolved.startswith(parts[0] + "/")


class _Unpacker:
    def __init__(self, root_fd: int, top: str) -> None:
        self.root_fd = root_fd
        self.top = top
        self.files: set[tuple[str, ...]] = set()  # regular files unpacked so far
        self.dir_modes: list[tuple[list[str], int, float]] = []

    def member(self, archive: tarfile.TarFile, info: tarfile.TarInfo) -> None:
        parts = _parts(info.name, self.top)
        name = info.name
        if not (info.isreg() or info.isdir() or info.issym() or info.islnk()):
            raise _refuse(name, "a device, FIFO or other special file")
        parent = _open_parent(self.root_fd, parts, name)
        try:
            leaf = parts[-1]
            if info.isdir():
                self._mkdir(parent, leaf, name)
                self.dir_modes.append((parts, stat.S_IMODE(info.mode) & 0o777, info.mtime))
                return
            self._clear(parent, leaf, name)
            if info.issym():
                if not _symlink_stays_inside(parts, info.linkname):
                    raise _refuse(name, "a symbolic link that points outside the copy")
                os.symlink(info.linkname, leaf, dir_fd=parent)
            elif info.islnk():
                self._hardlink(parent, leaf, info, name)
            else:
                self._write(archive, info, parent, leaf)
            if not info.issym():
                os.utime(leaf, (info.mtime, info.mtime), dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(parent)

    def _mkdir(self, parent: int, leaf: str, name: str) -> None:
        try:
            os.mkdir(leaf, 0o700, dir_fd=parent)
        except FileExistsError:
            if not stat.S_ISDIR(os.stat(leaf, dir_fd=parent, follow_symlinks=False).st_mode):
                raise _refuse(
                    name, "a folder where the archive already put something else"
                ) from None

    def _clear(self, parent: int, leaf: str, name: str) -> None:
        """A later member of the same name replaces an earlier file or link (as tar does);
        it never writes into it."""
        try:
            mode = os.stat(leaf, dir_fd=parent, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISDIR(mode):
            raise _refuse(name, "a file where the archive already put a folder")
        os.unlink(leaf, dir_fd=parent)

    def _hardlink(self, parent: int, leaf: str, info: tarfile.TarInfo, name: str) -> None:
        try:
            source = tuple(_parts(info.linkname, self.top))
        except UnsafeArchive:
            source = ()
        if source not in self.files:
            raise _refuse(name, "a hard link to something outside the copy")
        source_parent = _open_parent(self.root_fd, list(source), name)
        try:
            os.link(
                source[-1], leaf, src_dir_fd=source_parent, dst_dir_fd=parent, follow_symlinks=False
            )
        finally:
            os.close(source_parent)
        self.files.add(tuple(_parts(info.name, self.top)))

    def _write(self, archive: tarfile.TarFile, info: tarfile.TarInfo, parent: int, leaf: str):
        fd = os.open(leaf, FILE_FLAGS, 0o600, dir_fd=parent)
        with os.fdopen(fd, "wb") as out:
            source = archive.extractfile(info)
            assert source is not None
            while block := source.read(1 << 20):
                out.write(block)
            os.fchmod(out.fileno(), stat.S_IMODE(info.mode) & 0o777)
        self.files.add(tuple(_parts(info.name, self.top)))

    def finish(self) -> None:
        """Folder modes last (deepest first), so read-only folders could be filled."""
        for parts, mode, mtime in sorted(self.dir_modes, key=lambda d: -len(d[0])):
            parent = _open_parent(self.root_fd, parts, "/".join(parts))
            try:
                os.chmod(parts[-1], mode, dir_fd=parent, follow_symlinks=False)
                os.utime(parts[-1], (mtime, mtime), dir_fd=parent, follow_symlinks=False)
            finally:
                os.close(parent)


def unpack(stream: BinaryIO, into: Path, top: str) -> Path:
    """Unpack the tar `stream` into the empty folder `into`; return `into / top`.
    Raises UnsafeArchive at the first member that is not allowed."""
    if top in ("", ".", "..") or "/" in top:
        raise _refuse(top, "not a plain name")
    with _dir_fd(into) as root_fd, tarfile.open(fileobj=stream, mode="r|") as archive:
        unpacker = _Unpacker(root_fd, top)
        for info in archive:
            unpacker.member(archive, info)
        unpacker.finish()
    result = into / top
    if not os.path.lexists(result):
        raise UnsafeArchive(
            f"the VM sent no {for_terminal(top, one_line=True)}", hint="check the path in the VM"
        )
    return result


def _conflicts(source: Path, dest_fd: int, shown: str) -> Iterator[str]:
    """Why moving the tree `source` into the folder `dest_fd` could go wrong, if it could."""
    for entry in os.scandir(source):
        try:
            mode = os.stat(entry.name, dir_fd=dest_fd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            continue
        here = f"{shown}/{entry.name}"
        if entry.is_dir(follow_symlinks=False):
            if stat.S_ISLNK(mode):
                yield f"{here} is a symbolic link; aq does not merge a folder through it"
            elif not stat.S_ISDIR(mode):
                yield f"{here} is a file; the copy has a folder there"
            else:
                child = os.open(entry.name, DIR_FLAGS, dir_fd=dest_fd)
                try:
                    yield from _conflicts(Path(entry.path), child, here)
                finally:
                    os.close(child)
        elif stat.S_ISDIR(mode):
            yield f"{here} is a folder; the copy has a file there"


def _move_into(source: Path, dest_fd: int) -> None:
    with _dir_fd(source) as source_fd:
        for entry in os.scandir(source):
            try:
                mode = os.stat(entry.name, dir_fd=dest_fd, follow_symlinks=False).st_mode
            except FileNotFoundError:
                mode = None
            if mode is not None and stat.S_ISDIR(mode) and entry.is_dir(follow_symlinks=False):
                child = os.open(entry.name, DIR_FLAGS, dir_fd=dest_fd)
                try:
                    _move_into(Path(entry.path), child)
                finally:
                    os.close(child)
            else:
                os.rename(entry.name, entry.name, src_dir_fd=source_fd, dst_dir_fd=dest_fd)


def merge(tree: Path, dest: Path) -> None:
    """Move the folder `tree` into the existing folder `dest`, entry by entry; refuse
    before moving anything when an entry would go through a symlink or replace a folder."""
    with _dir_fd(dest, follow=True) as dest_fd:
        problems = list(_conflicts(tree, dest_fd, for_terminal(str(dest), one_line=True)))
        if problems:
            raise AqError(f"cannot merge into {problems[0]}", hint="remove it, or copy elsewhere")
        _move_into(tree, dest_fd)
