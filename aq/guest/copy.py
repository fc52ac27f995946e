"""`aq cp`: files and directories both ways as tar streams over the command channel.

No SSH and no network: the host packs or unpacks with Python's tarfile, the guest with
busybox tar, through `aq exec`'s binary-safe streams. Modes are kept; files written in
the guest belong to root (the host's owners mean nothing there).
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from aq.errors import AqError, InvalidInput, NotFound
from aq.guest import channel, untar
from aq.paths import VmFiles
from aq.safetext import for_terminal


@dataclass(frozen=True)
class Endpoint:
    vm: str | None  # None: the host
    path: str


def parse_endpoint(text: str) -> Endpoint:
    """`NAME:PATH` is in a VM; anything else (including ./a:b) is on the host."""
    name, sep, path = text.partition(":")
    if sep and name and "/" not in name and not text.startswith("."):
        if not path:
            raise InvalidInput(f"{text!r} names no path in the VM", hint="write NAME:/path")
        return Endpoint(name, path)
    return Endpoint(None, text)


def _guest(files: VmFiles, argv: list[str], stdin: bytes | None = None) -> tuple[int, str]:
    status, out, err = channel.capture(files, argv, stdin=stdin, timeout=120)
    return status, (out + err).decode(errors="replace").strip()


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def to_guest(files: VmFiles, source: Path, dest: str, recursive: bool) -> None:
    """Copy host `source` to `dest` in the guest (into it, if it is a directory)."""
    if not source.exists():
        raise NotFound(f"{source} does not exist", hint="check the path on this machine")
    if source.is_dir() and not recursive:
        raise InvalidInput(f"{source} is a directory", hint="use aq cp -r")
    if not (source.is_dir() or source.is_file()):  # cp would read it; tar copies the node
        raise InvalidInput(
            f"{source} is a device, FIFO or socket, not a file or folder",
            hint=f"stream it: aq exec NAME -- sh -c 'cat > PATH' < {source}",
        )
    into_folder, special = _guest_dest(files, dest, source.name)
    if into_folder:
        folder, name = dest, source.name
    else:
        folder, name = posixpath.dirname(dest) or ".", posixpath.basename(dest.rstrip("/"))
    if special:  # tar would replace the node: `aq cp x VM:/dev/null` would remove it
        raise InvalidInput(
            f"{posixpath.join(folder, name)} in the VM is a device, FIFO or socket, "
            "not a file or folder",
            hint=f"name a file, or write into it: aq exec NAME -- sh -c 'cat > PATH' < {source}",
        )
    read_fd, write_fd = os.pipe()

    def pack() -> None:
        with os.fdopen(write_fd, "wb") as pipe:
            try:
                with tarfile.open(fileobj=pipe, mode="w|") as tar:
                    # A symlink named as the source is followed, as cp does.
                    tar.add(source.resolve(), arcname=name, filter=_root_owned)
            except BrokenPipeError:
                pass

    packer = threading.Thread(target=pack, daemon=True)
    packer.start()
    with (
        os.fdopen(read_fd, "rb") as stdin,
        tempfile.TemporaryFile() as err,
        open(os.devnull, "wb") as out,
    ):
        status = channel.run(
            files, ["tar", "x", "-C", folder], channel.ExecOptions(stdin, out, err, timeout=None)
        )
        err.seek(0)
        message = for_terminal(err.read(4096).strip(), one_line=True)
    packer.join()
    if status != 0:
        raise AqError(f"copying into the VM failed: {message or f'tar exit status {status}'}")


def _guest_dest(files: VmFiles, dest: str, name: str) -> tuple[bool, bool]:
    """Whether `dest` is a folder in the guest (the copy then goes into it, as `name`),
    and whether the path the copy would take is a device, FIFO or socket there."""
    probe = (
        'if [ -d "$1" ]; then t="$1/$2"; k=d; else t=$1; k=-; fi; '
        'if [ -e "$t" ] && [ ! -d "$t" ] && [ ! -f "$t" ]; then k="${k}s"; fi; echo "$k"'
    )
    status, answer = _guest(files, ["sh", "-c", probe, "sh", dest, name])
    if status != 0 or answer not in ("d", "-", "ds", "-s"):
        raise AqError(
            f"the VM's answer about {dest} makes no sense: "
            f"{for_terminal(answer[:200], one_line=True)}",
            hint="nothing was copied; see `aq console NAME`",
        )
    return answer.startswith("d"), answer.endswith("s")


def _guest_kind(files: VmFiles, source: str) -> tuple[str, str]:
    """("d", "f" or "s": a folder, a file or something else, such as a device; and the
    resolved path) of `source` in the guest, in one round trip."""
    probe = (
        'p=$(readlink -f -- "$1") && [ -e "$p" ] || exit 3; '
        '[ -d "$p" ] && k=d || { [ -f "$p" ] && k=f || k=s; }; echo "$k $p"'
    )
    status, out, _ = channel.capture(files, ["sh", "-c", probe, "sh", source], timeout=120)
    if status != 0:
        raise NotFound(f"{source} does not exist in the VM", hint="check the path in the VM")
    kind, _, real = out.decode(errors="surrogateescape").rstrip("\n").partition(" ")
    return kind, real


ERROR_TEXT_MAX = 4096  # bytes of the guest's error text shown to the user


def _error_text(err: BinaryIO) -> str:
    """The start of what the guest wrote on stderr, safe to print on one line."""
    err.seek(0)
    return for_terminal(err.read(ERROR_TEXT_MAX).strip(), one_line=True)


def _plain_name(name: str) -> bool:
    return name not in ("", ".", "..") and "/" not in name


def _refuse_special(target: Path) -> None:
    """A device, FIFO or socket is no place for a copy. cp would write into it, but aq
    places what it copied by renaming it over the destination (whole or not at all),
    which would replace the node itself: `aq cp VM:/x /dev/null` would remove /dev/null."""
    try:
        mode = target.lstat().st_mode
    except FileNotFoundError:
        return
    if untar.special(mode):
        raise InvalidInput(
            f"{target} is a device, FIFO or socket, not a file or folder",
            hint=f"name a file, or write into it: aq exec NAME -- cat PATH > {target}",
        )


def from_guest(files: VmFiles, source: str, dest: Path, recursive: bool) -> None:
    """Copy `source` in the guest to host `dest` (into it, if it is a directory).

    The guest is not trusted: its archive is unpacked by aq.guest.untar into a private
    folder next to the destination, checked member by member, and moved into place only
    when all of it is fine. The destination's name comes from `source`, never from the guest.
    """
    wanted = posixpath.basename(source.rstrip("/"))
    if not _plain_name(wanted):
        raise InvalidInput(
            f"{source!r} names no file or folder by name", hint="write VM:/path/to/folder"
        )
    target = dest / wanted if dest.is_dir() else dest
    if not target.parent.is_dir():
        raise NotFound(f"{target.parent} is not a folder", hint="create it first")
    _refuse_special(target)
    kind, real = _guest_kind(files, source)
    if kind == "s":
        raise InvalidInput(
            f"{source} is a device, FIFO or socket in the VM, not a file or folder",
            hint=f"stream it: aq exec NAME -- cat {source} > FILE",
        )
    if kind == "d" and not recursive:
        raise InvalidInput(f"{source} is a directory in the VM", hint="use aq cp -r")
    # A symlink named as the source is followed (as cp and scp do); links inside a
    # copied tree stay links (see aq.guest.untar for why that is safe).
    parent, name = posixpath.split(real)
    if kind not in ("d", "f") or not parent.startswith("/") or not _plain_name(name):
        raise untar.UnsafeArchive(
            f"the VM answered {for_terminal(real, one_line=True)} for {source}",
            hint="the VM's answer makes no sense; nothing was copied",
        )
    work = Path(tempfile.mkdtemp(prefix=".aq-cp-", dir=target.parent))
    try:
        with tempfile.TemporaryFile() as archive, tempfile.TemporaryFile() as err:
            status = channel.run(
                files,
                ["tar", "c", "-C", parent, name],
                channel.ExecOptions(None, archive, err, timeout=None),
            )
            if status != 0:
                raise AqError(f"copying out of the VM failed: {_error_text(err)}")
            got = untar.unpack(archive, work, name)
        extracted = work / name
        if got == "l" or (got == "d") != (kind == "d"):
            raise untar.UnsafeArchive(f"the VM sent something else than {source} is")
        if target.is_dir() and not target.is_symlink():
            if got != "d":
                raise InvalidInput(f"{target} is a directory; {source} is not")
            untar.merge(extracted, target)
        elif target.is_dir() or (target.exists() and got == "d"):
            raise InvalidInput(f"{target} is a file or link; {source} is a directory")
        else:
            os.replace(extracted, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
