"""aq's SQLite store: models, engine and sessions, migrations."""
