"""Unpacking a tar stream that a guest made, which may be hostile, and placing it.

The guest chooses every byte of the archive, so nothing in it is trusted, and
tarfile's own `filter=` is not relied on (it checks names, not where a hard link
points, and it differs across Python patch releases). Instead every member is
checked here and written by hand into a fresh private folder:

- its name is relative, has no `..`, and lies under the one top name aq asked for;
- it is a regular file, a folder, a symbolic link, or a hard link to a regular file
  unpacked earlier from the same archive; devices, FIFOs and anything else are refused;
- no name is unpacked twice, and no member lies under a symbolic link;
- modes keep only the permission bits (no setuid, setgid or sticky bit); owners are not
  kept (the files belong to whoever runs aq).

Symbolic links stay links only when they stay inside the copy (relative, never
climbing above its top): a link that points outside it (absolute ones such as
/etc/localtime included) is refused like any other member, as the destination must hold
nothing that leads out of it; copy the link's target instead. Nothing is ever written
through a link either: unpacking refuses members under one, and placing the result into
an existing folder opens every folder with O_NOFOLLOW relative to its parent and
replaces an existing link itself, never its target.

A refused member stops the copy with `UnsafeArchive` naming it (made safe to print),
and the private folder is removed: nothing half-copied is left behind.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
from pathlib import Path
from typing import BinaryIO

from aq.errors import AqError
from aq.safetext import for_terminal

HEADER_MAX = 1 << 20  # bytes of a pax or GNU long-name header (tarfile reads it whole)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeArchive(AqError):
    """The guest's archive tried to reach outside the destination, or held something
    aq never creates from a guest (a device, a FIFO, a link to outside)."""

    default_hint = "the VM sent a crafted archive; nothing was copied"


def _refuse(name: str, why: str) -> UnsafeArchive:
    return UnsafeArchive(f"refused {for_terminal(name, one_line=True)!s} from the VM: {why}")


def check_headers(archive: BinaryIO) -> None:
    """Refuse extended headers larger than HEADER_MAX before tarfile reads them whole."""
    archive.seek(0)
    while True:
        block = archive.read(tarfile.BLOCKSIZE)
        if len(block) < tarfile.BLOCKSIZE or block == tarfile.NUL * tarfile.BLOCKSIZE:
            break
        try:
            size = tarfile.nti(block[124:136])
        except (tarfile.InvalidHeaderError, ValueError):
            break  # tarfile itself reports a broken header
        if size < 0:
            raise _refuse("(archive header)", "a negative size")
        if block[156:157] in (b"x", b"g", b"L", b"K") and size > HEADER_MAX:
            raise _refuse("(archive header)", f"an extended header of {size} bytes")
        archive.seek((size + tarfile.BLOCKSIZE - 1) // tarfile.BLOCKSIZE * tarfile.BLOCKSIZE, 1)
    archive.seek(0)


def _relative(name: str, top: str) -> tuple[str, ...]:
    """The member's path parts below the work folder, checked."""
    clean = name.rstrip("/")
    if "\0" in name:
        raise _refuse(name, "a NUL byte in its name")
    if not clean or clean.startswith("/"):
        raise _refuse(name, "an absolute name")
    parts = tuple(part for part in clean.split("/") if part not in ("", "."))
    if not parts or ".." in parts:
        raise _refuse(name, "a name that climbs out with ..")
    if parts[0] != top:
        raise _refuse(name, f"a name outside {for_terminal(top, one_line=True)}")
    return parts


def _stays_inside(parts: tuple[str, ...], target: str) -> bool:
    """Whether a symlink at `parts` pointing at `target` resolves inside the copied tree
    (lexically: every link in the tree is checked the same way)."""
    if target.startswith("/"):
        return False
    depth = len(parts) - 1  # the folders that hold the link, the top included
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 1:  # above the top: outside the copy
                return False
        elif part not in ("", "."):
            depth += 1
    return True


class _Unpacker:
    """Writes members below `root` (a fresh folder) through folder fds, never following links."""

    def __init__(self, root: Path, top: str) -> None:
        self.root = root
        self.top = top
        self.kinds: dict[tuple[str, ...], str] = {}  # path parts -> "d", "f" or "l"
        self.dirs: list[tuple[tuple[str, ...], int, float]] = []

    def _parent_fd(self, parts: tuple[str, ...], name: str) -> int:
        for depth in range(1, len(parts)):
            if self.kinds.get(parts[:depth]) != "d":
                raise _refuse(name, "a member under a link or a missing folder")
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            for part in parts[:-1]:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = _relative(member.name, self.top)
        if parts in self.kinds:
            raise _refuse(member.name, "a second member of the same name")
        mode = member.mode & 0o777
        parent = self._parent_fd(parts, member.name)
        leaf = parts[-1]
        try:
            if member.isdir():
                os.mkdir(leaf, 0o700, dir_fd=parent)
                self.dirs.append((parts, mode, member.mtime))
                self.kinds[parts] = "d"
            elif member.isfile():
                self._write(tar, member, parent, leaf, mode)
                self.kinds[parts] = "f"
            elif member.issym():
                if "\0" in member.linkname or not member.linkname:
                    raise _refuse(member.name, "a link with an impossible target")
                if not _stays_inside(parts, member.linkname):
                    raise _refuse(member.name, "a symbolic link that points outside the copy")
                os.symlink(member.linkname, leaf, dir_fd=parent)
                self.kinds[parts] = "l"
            elif member.islnk():
                self._link(member, parent, leaf)
                self.kinds[parts] = "f"
            else:
                raise _refuse(member.name, "a device, FIFO or other special file")
        finally:
            os.close(parent)

    def _write(
        self, tar: tarfile.TarFile, member: tarfile.TarInfo, parent: int, leaf: str, mode: int
    ) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(leaf, flags, 0o600, dir_fd=parent)
        with os.fdopen(fd, "wb") as out:
            source = tar.extractfile(member)
            if source is not None:
                shutil.copyfileobj(source, out, 1 << 20)
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.utime(out.fileno(), (member.mtime, member.mtime))

    def _link(self, member: tarfile.TarInfo, parent: int, leaf: str) -> None:
        try:
            target = _relative(member.linkname, self.top)
        except UnsafeArchive:
            raise _refuse(member.name, "a hard link to outside the copy") from None
        if self.kinds.get(target) != "f":
            raise _refuse(member.name, "a hard link to something not copied before it")
        source_parent = self._parent_fd(target, member.name)
        try:
            os.link(
                target[-1], leaf, src_dir_fd=source_parent, dst_dir_fd=parent, follow_symlinks=False
            )
        finally:
            os.close(source_parent)

    def finish(self) -> None:
        """Folder modes and times last (deepest first), so read-only folders fill first."""
        for parts, mode, mtime in sorted(self.dirs, key=lambda d: -len(d[0])):
            parent = self._parent_fd(parts, "/".join(parts))
            try:
                os.chmod(parts[-1], mode | 0o700, dir_fd=parent, follow_symlinks=False)
                os.utime(parts[-1], (mtime, mtime), dir_fd=parent, follow_symlinks=False)
            finally:
                os.close(parent)


def unpack(archive: BinaryIO, root: Path, top: str) -> str:
    """Unpack the guest's `archive` below the fresh folder `root`; every member must be
    `top` or under it. Return the top member's kind: "d", "f" or "l"."""
    check_headers(archive)
    unpacker = _Unpacker(root, top)
    try:
        with tarfile.open(fileobj=archive, mode="r|") as tar:
            for member in tar:
                unpacker.add(tar, member)
    except tarfile.TarError as err:
        raise UnsafeArchive(
            f"the VM sent a broken archive: {for_terminal(str(err), one_line=True)}"
        ) from None
    except OSError as err:
        name = for_terminal(err.filename or "", one_line=True)
        raise AqError(
            f"could not write {name} from the VM: {err.strerror or err}",
            hint="check the destination's free space and permissions",
        ) from None
    if (top,) not in unpacker.kinds:
        raise UnsafeArchive("the VM's archive does not hold what was asked for")
    unpacker.finish()
    return unpacker.kinds[(top,)]


def special(mode: int) -> bool:
    """A device, FIFO or socket (`mode` as lstat gives it): never a place for a copy,
    since placing one renames it over the path and so replaces the node itself."""
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode))


def _conflicts(source: int, dest: int, where: str) -> None:
    """Refuse before moving anything if a folder would land on a non-folder, or
    anything on a device, FIFO or socket."""
    for entry in list(os.scandir(source)):
        try:
            there = os.stat(entry.name, dir_fd=dest, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if special(there.st_mode):  # merging into /dev would replace /dev/null
            raise AqError(
                f"{where}/{for_terminal(entry.name, one_line=True)} exists and is a device, "
                "FIFO or socket, which the copy would replace",
                hint="copy to a new folder",
            )
        is_dir = entry.is_dir(follow_symlinks=False)
        if is_dir != stat.S_ISDIR(there.st_mode):
            what = "a folder" if is_dir else "not a folder"
            raise AqError(
                f"{where}/{for_terminal(entry.name, one_line=True)} exists and the copy "
                f"is {what} there",
                hint="move it away or copy to a new folder",
            )
        if is_dir:
            _with_dirs(source, dest, entry.name, lambda s, d, w: _conflicts(s, d, w), where)


def _with_dirs(source: int, dest: int, name: str, action, where: str) -> None:
    sub_source = os.open(name, _DIR_FLAGS, dir_fd=source)
    try:
        sub_dest = os.open(name, _DIR_FLAGS, dir_fd=dest)
        try:
            action(sub_source, sub_dest, f"{where}/{name}")
        finally:
            os.close(sub_dest)
    finally:
        os.close(sub_source)


def _move(source: int, dest: int, where: str) -> None:
    for entry in list(os.scandir(source)):
        try:
            there = os.stat(entry.name, dir_fd=dest, follow_symlinks=False)
        except FileNotFoundError:
            os.rename(entry.name, entry.name, src_dir_fd=source, dst_dir_fd=dest)
            continue
        if entry.is_dir(follow_symlinks=False) and stat.S_ISDIR(there.st_mode):
            _with_dirs(source, dest, entry.name, _move, where)
        else:  # rename replaces a link itself, never what it points to
            os.rename(entry.name, entry.name, src_dir_fd=source, dst_dir_fd=dest)


def merge(source: Path, dest: Path) -> None:
    """Move the folder `source`'s contents into the existing folder `dest`, never
    following a symbolic link in `dest`; refuse (moving nothing) on a folder/file clash
    or on a device, FIFO or socket in the way."""
    source_fd = os.open(source, _DIR_FLAGS)
    dest_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _conflicts(source_fd, dest_fd, str(dest))
        _move(source_fd, dest_fd, str(dest))
    finally:
        os.close(source_fd)
        os.close(dest_fd)
