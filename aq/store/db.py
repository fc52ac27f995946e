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
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from aq import paths
from aq.errors import AqError, InvalidInput
from aq.store.schema import HEAD_REVISION, KNOWN_REVISIONS

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


# SQLite's primary result codes, chosen by what happened (never by the message's wording).
SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY, SQLITE_IOERR = 5, 6, 8, 10
SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_NOTADB = 11, 13, 14, 26


def explain(err: sqlite3.Error, db_file: Path | None = None) -> AqError:
    """The one-line error and hint for a database failure, by SQLite's result code."""
    where = str(db_file or paths.db_path())
    code = getattr(err, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in (SQLITE_BUSY, SQLITE_LOCKED):
        return AqError(
            "the database stayed locked for too long",
            hint="another aq process may be stuck; `aq db` shows the database's path",
        )
    if primary == SQLITE_FULL:
        return AqError(
            f"the disk that holds aq's database is full ({where})", hint="free some space"
        )
    if primary == SQLITE_READONLY:
        return AqError(
            f"aq's database is read-only ({where})",
            hint="make it and its folder writable, or point AQ_HOME elsewhere",
        )
    if primary == SQLITE_IOERR:
        return AqError(
            f"aq could not write its database ({where}): the disk may be full or failing",
            hint="free some space, or point AQ_HOME at another disk",
        )
    if primary == SQLITE_CANTOPEN:
        return AqError(
            f"aq cannot open its database ({where})",
            hint="check that AQ_HOME exists and is writable",
        )
    if primary in (SQLITE_CORRUPT, SQLITE_NOTADB):
        return AqError(
            f"aq's database is damaged or is not a database ({where})",
            hint="move it aside and aq starts a new one (its VMs' records are in it)",
        )
    return AqError(f"aq's database failed: {err}", hint="`aq db` shows its path; run with --debug")


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
    except sqlite3.OperationalError as err:
        if getattr(err, "sqlite_errorcode", 1) & 0xFF != 1:
            raise explain(err, db_file) from err
        return None  # a new database: no alembic_version table yet
    except sqlite3.Error as err:
        raise explain(err, db_file) from err
    return row[0] if row else None


def ensure_schema(db_file: Path) -> None:
    """Bring the database to the schema this aq knows, migrating at most once.

    The common case, a current schema, costs one small query and never imports
    Alembic. Otherwise a file lock makes concurrent first runs migrate only once. A
    database written by a newer aq is left alone.
    """
    revision = current_revision(db_file)
    if revision == HEAD_REVISION:
        return
    if revision is not None and revision not in KNOWN_REVISIONS:
        raise AqError(
            f"the database {db_file} was written by a newer aq (schema {revision!r})",
            hint="upgrade aq, or point AQ_HOME at another folder",
        )
    try:
        _migrate(db_file)
    except OSError as err:
        raise AqError(
            f"aq cannot write in {db_file.parent}: {err.strerror}",
            hint="make it writable (and not full), or point AQ_HOME elsewhere",
        ) from err


def _migrate(db_file: Path) -> None:
    from filelock import FileLock

    paths.make_private_dir(db_file.parent)
    with FileLock(str(paths.migration_lock())):
        if current_revision(db_file) == HEAD_REVISION:
            return
        from aq.store.migrate import upgrade

        try:
            upgrade(db_file)
        except DBAPIError as err:
            raise explain(err.orig, db_file) from err
        except sqlite3.Error as err:
            raise explain(err, db_file) from err


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
    except DBAPIError as err:
        if isinstance(err.orig, sqlite3.Error):
            raise explain(err.orig) from err
        raise
    except OverflowError as err:  # a number past SQLite's 64-bit integers
        raise InvalidInput(f"a number is too large: {err}", hint="use a smaller value") from err


def reading() -> AbstractContextManager[Session]:
    """A read transaction: a consistent snapshot that never blocks writers."""
    return _session(write=False)


def writing() -> AbstractContextManager[Session]:
    """A write transaction that holds SQLite's write lock from its first statement."""
    return _session(write=True)
