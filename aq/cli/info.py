"""`aq db`: where aq keeps things, for scripts that query the database."""

from __future__ import annotations

import click

from aq import paths
from aq.cli.output import echo, json_option, print_json


@click.command("db")
@json_option
def db(as_json: bool) -> None:
    """Print the path of aq's SQLite database (schema made current first).

    \b
    sqlite3 "$(aq db)" "SELECT name, state FROM vms WHERE state != 'removed'"
    """
    from aq.store.db import engine

    engine()
    if as_json:
        print_json({"database": str(paths.db_path()), "home": str(paths.home())})
    else:
        echo(str(paths.db_path()))


COMMANDS = [db]
