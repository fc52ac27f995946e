"""A gzip'd newc cpio archive, written in pure Python (what the kernel unpacks as
its initramfs; no cpio binary needed)."""

from __future__ import annotations

import gzip
import os
import stat
from pathlib import Path


def _newc_header(
    name: str,
    ino: int,
    mode: int,
    uid: int,
    gid: int,
    nlink: int,
    mtime: int,
    size: int,
    rdev: tuple[int, int] = (0, 0),
) -> bytes:
    name_b = name.encode() + b"\0"
    fields = (ino, mode, uid, gid, nlink, mtime, size, 0, 0, rdev[0], rdev[1], len(name_b), 0)
    hdr = b"070701" + "".join(f"{v:08X}" for v in fields).encode() + name_b
    return hdr + b"\0" * (-len(hdr) % 4)


def write_newc_gz(root: Path, dest: Path, extra_nodes=(), compresslevel: int = 1) -> None:
    """Pack `root` as a gzip'd newc cpio (what the kernel unpacks as initramfs).

    `extra_nodes`: (path, mode, major, minor) device nodes added without mknod.
    """
    ino = 1
    with (
        open(dest, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=compresslevel, mtime=0) as z,
    ):
        for dirpath, dirs, files in os.walk(root):
            dirs.sort()
            rel_dir = os.path.relpath(dirpath, root)
            names = [None] if rel_dir != "." else []
            names += sorted(files) + [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]
            for n in names:
                p = dirpath if n is None else os.path.join(dirpath, n)
                st = os.lstat(p)
                if stat.S_ISLNK(st.st_mode):
                    data = os.readlink(p).encode()
                elif stat.S_ISREG(st.st_mode):
                    with open(p, "rb") as f:
                        data = f.read()
                elif stat.S_ISDIR(st.st_mode):
                    data = b""
                else:
                    raise RuntimeError(f"unexpected file type: {p}")
                z.write(
                    _newc_header(
                        os.path.relpath(p, root),
                        ino,
                        st.st_mode,
                        st.st_uid,
                        st.st_gid,
                        2 if stat.S_ISDIR(st.st_mode) else 1,
                        int(st.st_mtime),
                        len(data),
                    )
                )
                z.write(data)
                z.write(b"\0" * (-len(data) % 4))
                ino += 1
        for name, mode, major, minor in extra_nodes:
            z.write(_newc_header(name, ino, mode, 0, 0, 1, 0, 0, (major, minor)))
            ino += 1
        z.write(_newc_header("TRAILER!!!", 0, 0, 0, 0, 1, 0, 0))
