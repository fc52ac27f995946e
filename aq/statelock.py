"""One suspend or snapshot at a time per VM (a file lock in its folder)."""

from __future__ import annotations

from contextlib import contextmanager

from aq import paths
from aq.errors import Conflict


@contextmanager
def exclusive(files: paths.VmFiles, name: str, action: str):
    """One suspend or snapshot at a time per VM; another is told who holds it."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(files.state_lock), mode=0o600)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise Conflict(
            f"cannot {action} VM '{name}': another aq process is suspending or snapshotting it",
            hint=f"wait for it, then see `aq status {name}`",
        ) from None
    try:
        yield
    finally:
        lock.release()
