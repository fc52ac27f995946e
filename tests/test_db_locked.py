"""A database held locked past the busy timeout is reported by SQLite's error code."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import text

from aq import paths, vm
from aq.errors import AqError
from aq.store import db


def test_locked_database_is_one_line_with_a_hint(aq_home, monkeypatch) -> None:
    vm.list_vms()  # makes the database
    monkeypatch.setattr(db, "BUSY_TIMEOUT_S", 0.2)
    db._engine.cache_clear()
    holder = sqlite3.connect(paths.db_path(), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(AqError) as caught, db.writing() as session:
            session.execute(text("SELECT 1"))  # the first statement takes the write lock
        assert caught.value.one_line() == (
            "the database stayed locked for too long. Hint: another aq process may be "
            "stuck; `aq db` shows the database's path"
        )
    finally:
        holder.close()
        db._engine.cache_clear()
