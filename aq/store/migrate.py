"""Running Alembic migrations that ship inside the wheel (imported only when needed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import command
from alembic.config import Config

import aq


def migrations_dir() -> Path:
    """The migrations folder: aq.migrations in an installed wheel, else the checkout's.

    Running from a source checkout (tests with the repo on sys.path) finds the source
    `aq` package first, which has no `migrations` inside; the repo's top-level folder
    is the same content.
    """
    spec = importlib.util.find_spec("aq.migrations")
    if spec is not None and spec.origin:
        return Path(spec.origin).parent
    return Path(aq.__file__).resolve().parent.parent / "migrations"


def alembic_config(db_file: Path) -> Config:
    """An Alembic config pointing at the packaged migrations and `db_file`."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", f"sqlite:///{db_file}")
    return config


def upgrade(db_file: Path, revision: str = "head") -> None:
    """Migrate `db_file` (created if missing) to `revision`."""
    command.upgrade(alembic_config(db_file), revision)


def head() -> str:
    """The newest revision among the packaged migrations."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(Path("unused.db")))
    current = script.get_current_head()
    assert current is not None
    return current
