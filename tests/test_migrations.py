"""Migrations: from nothing to head, from the first schema with rows kept, and no
Alembic import when the schema is current."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from aq import paths
from aq.store import migrate
from aq.store.models import Base
from aq.store.schema import HEAD_REVISION
from tests.conftest import REPO

FIRST = "0001"


def test_head_constant_matches_migrations() -> None:
    assert migrate.head() == HEAD_REVISION


def test_empty_database_to_head_matches_models(tmp_path) -> None:
    db = tmp_path / "new.db"
    migrate.upgrade(db)
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_first_schema_to_head_keeps_rows(tmp_path) -> None:
    db = tmp_path / "old.db"
    migrate.upgrade(db, FIRST)
    con = sqlite3.connect(db)
    con.executescript(
        """
        INSERT INTO images (id, kind, path, format, version, arch, size, created_at)
            VALUES (1, 'base', '/b.qcow2', 'qcow2', '3.23.6', 'x86_64', 1, '2026-01-01');
        INSERT INTO vms (id, name, state, arch, cpus, memory_mib, disk_path, disk_size, mac,
                         base_image_id, created_at, updated_at)
            VALUES (1, 'old', 'stopped', 'x86_64', 1, 512, '/d', 1, '02:00:00:00:00:01', 1,
                    '2026-01-01', '2026-01-01');
        INSERT INTO port_forwards (vm_id, protocol, host_addr, host_port, guest_port, auto)
            VALUES (1, 'tcp', '127.0.0.1', 2222, 22, 1);
        INSERT INTO events (vm_id, event, from_state, to_state, at, pid)
            VALUES (1, 'create', NULL, 'created', '2026-01-01 00:00:00.000001', 1);
        """
    )
    con.commit()
    con.close()
    migrate.upgrade(db)
    con = sqlite3.connect(db)
    assert con.execute("SELECT name, state, mac FROM vms").fetchall() == [
        ("old", "stopped", "02:00:00:00:00:01")
    ]
    assert con.execute("SELECT host_port FROM port_forwards").fetchall() == [(2222,)]
    assert con.execute("SELECT event, at FROM events").fetchall() == [
        ("create", "2026-01-01 00:00:00.000001")
    ]
    assert con.execute("SELECT version_num FROM alembic_version").fetchone() == (HEAD_REVISION,)


def test_aq_opens_older_database_by_migrating(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AQ_HOME", str(tmp_path))
    paths.make_private_dir(tmp_path)
    migrate.upgrade(paths.db_path(), FIRST)
    from aq import vm

    assert vm.list_vms() == []
    con = sqlite3.connect(paths.db_path())
    assert con.execute("SELECT version_num FROM alembic_version").fetchone() == (HEAD_REVISION,)


def test_current_schema_does_not_import_alembic(tmp_path) -> None:
    env = {"AQ_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    code = (
        "import sys, runpy; sys.argv = ['aq', 'ls'];"
        "from aq.cli.main import cli;"
        "cli.main(['ls'], standalone_mode=False);"
        "print('ALEMBIC' if 'alembic' in sys.modules else 'NO-ALEMBIC')"
    )
    first = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True
    )
    assert first.stdout.splitlines()[-1] == "ALEMBIC"  # a new database is migrated
    second = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True
    )
    assert second.stdout.splitlines()[-1] == "NO-ALEMBIC"
