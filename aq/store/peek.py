"""A read-only look at aq's database for shell completion and `aq doctor`.

Both run where nothing should change: completion runs on every Tab press, doctor must
not repair what it reports. So this opens the SQLite file read-only with the standard
library alone (no SQLAlchemy, no Alembic: a Tab press stays fast), never creates the
database or migrates it, and answers "nothing" when the file is missing, locked, of an
older schema or damaged instead of raising.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

from aq import paths

TIMEOUT_S = 0.5  # a Tab press must not wait for a long write to finish


@contextlib.contextmanager
def _connection() -> Iterator[sqlite3.Connection | None]:
    db_file = paths.db_path()
    if not db_file.is_file():
        yield None
        return
    try:
        con = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=TIMEOUT_S)
    except sqlite3.Error:
        yield None
        return
    try:
        yield con
    finally:
        con.close()


def _rows(sql: str, params: tuple = ()) -> list[tuple]:
    with _connection() as con:
        if con is None:
            return []
        try:
            return con.execute(sql, params).fetchall()
        except sqlite3.Error:
            return []


def vm_names() -> list[str]:
    """Names of the VMs that exist (removed ones are history, not names to type)."""
    return [r[0] for r in _rows("SELECT name FROM vms WHERE state != 'removed' ORDER BY name")]


def images(kind: str | None = None) -> list[tuple[int, str, str]]:
    """(id, kind, version) of the images aq keeps, optionally of one kind."""
    sql = "SELECT id, kind, version FROM images"
    params: tuple = ()
    if kind is not None:
        sql += " WHERE kind = ?"
        params = (kind,)
    return [(int(i), str(k), str(v)) for i, k, v in _rows(sql + " ORDER BY id", params)]


def snapshot_tags() -> list[tuple[str, bool]]:
    """(tag, live) of the snapshots aq keeps; live: it holds memory too."""
    sql = (
        "SELECT i.tag, EXISTS (SELECT 1 FROM saved_states s WHERE s.image_id = i.id) "
        "FROM images i WHERE i.kind = 'snapshot' AND i.tag IS NOT NULL ORDER BY i.tag"
    )
    return [(str(tag), bool(live)) for tag, live in _rows(sql)]


def setting(key: str) -> str | None:
    """A value stored by `aq config set`, or None."""
    rows = _rows("SELECT value FROM settings WHERE key = ?", (key,))
    return rows[0][0] if rows else None


def has_base(arch: str) -> bool:
    """Whether a base disk for `arch` is recorded (aq new can then work offline)."""
    return bool(_rows("SELECT 1 FROM images WHERE kind = 'base' AND arch = ? LIMIT 1", (arch,)))


def running_vm(name: str) -> tuple[int, float] | None:
    """(pid, pid_started) of the VM `name` when the store, at the schema this aq knows,
    records it running; None for anything else (the caller then asks the full store)."""
    from aq.store.schema import HEAD_REVISION

    with _connection() as con:
        if con is None:
            return None
        try:
            revision = con.execute("SELECT version_num FROM alembic_version").fetchone()
            if revision is None or revision[0] != HEAD_REVISION:
                return None
            row = con.execute(
                "SELECT pid, pid_started FROM vms WHERE name = ? AND state = 'running'",
                (name,),
            ).fetchone()
        except sqlite3.Error:
            return None
    if row is None or row[0] is None or row[1] is None:
        return None
    return int(row[0]), float(row[1])
