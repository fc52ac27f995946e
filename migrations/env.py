"""Alembic environment: SQLite in batch mode so ALTERs work."""

from alembic import context

from aq.store.db import make_engine
from aq.store.models import Base

config = context.config


def run_migrations() -> None:
    # aq's own engine settings: WAL, and one BEGIN IMMEDIATE transaction around the
    # whole migration, so a schema change is all or nothing (SQLite DDL is transactional).
    url = config.get_main_option("sqlalchemy.url")
    engine = make_engine(url.removeprefix("sqlite:///")).execution_options(aq_write=True)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.engine.dispose()


run_migrations()
