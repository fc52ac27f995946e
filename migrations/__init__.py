"""aq's Alembic migrations; shipped inside the wheel as aq.migrations."""
