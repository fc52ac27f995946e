"""Opening the database: WAL, a busy timeout, and writes that lock up front.

Several aq processes may run at once. SQLite in WAL mode lets readers proceed while one
writer writes; every write transaction starts with BEGIN IMMEDIATE so it takes the write
lock before it reads, which is what makes compare-and-set transitions safe and keeps
"database is locked" (a deferred reader upgrading to a writer) from reaching users.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from aq import paths
from aq.errors import AqError
from aq.store.schema import HEAD_REVISION

BUSY_TIMEOUT_S = 60.0


def _configure(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        # Let SQLAlchemy's "begin" event (below) issue BEGIN, not the sqlite3 module.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        immediate = conn.get_execution_options().get("aq_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(db_file: str) -> Engine:
    """A new engine for `db_file` with aq's connection and transaction settings."""
    engine = create_engine(
        f"sqlite:///{db_file}", connect_args={"timeout": BUSY_TIMEOUT_S}, future=True
    )
    _configure(engine)
    return engine


_engine = cache(make_engine)


def current_revision(db_file: Path) -> str | None:
    """The schema revision stored in `db_file`, or None for a new or empty database."""
    if not db_file.exists():
        return None
    try:
        con = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
        try:
            row = con.execute("SELECT version_num FROM alembic_version").fetchone()
        finally:
            con.close()
    except sqlite3.OperationalError:
        return None
    return row[0] if row else None


def ensure_schema(db_file: Path) -> None:
    """Bring the database to the schema this aq knows, migrating at most once.

    The common case, a current schema, costs one small query and never imports
    Alembic. Otherwise a file lock makes concurrent first runs migrate only once.
    """
    if current_revision(db_file) == HEAD_REVISION:
        return
    from filelock import FileLock

    paths.make_private_dir(db_file.parent)
    with FileLock(str(paths.migration_lock())):
        if current_revision(db_file) == HEAD_REVISION:
            return
        from aq.store.migrate import upgrade

        upgrade(db_file)


def engine() -> Engine:
    """The engine for the database under the current aq home, schema made current."""
    db_file = paths.db_path()
    ensure_schema(db_file)
    return _engine(str(db_file))


@contextmanager
def _session(write: bool) -> Iterator[Session]:
    bind = engine().execution_options(aq_write=True) if write else engine()
    try:
        with Session(bind, expire_on_commit=False) as session, session.begin():
            yield session
    except OperationalError as err:
        code = getattr(err.orig, "sqlite_errorcode", None)  # chosen by SQLite's code
        if code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            raise AqError(
                "the database stayed locked for too long",
                hint="another aq process may be stuck; `aq db` shows the database's path",
            ) from err
        raise


def reading() -> AbstractContextManager[Session]:
    """A read transaction: a consistent snapshot that never blocks writers."""
    return _session(write=False)


def writing() -> AbstractContextManager[Session]:
    """A write transaction that holds SQLite's write lock from its first statement."""
    return _session(write=True)
