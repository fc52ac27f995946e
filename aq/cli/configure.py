"""`aq config`: settings such as the Alpine mirror."""

from __future__ import annotations

import click

from aq.cli import complete
from aq.cli.output import echo, json_option, print_json, print_table


@click.group("config", invoke_without_command=True)
@json_option
@click.pass_context
def config_group(ctx: click.Context, as_json: bool) -> None:
    """Show or change settings; environment variables (AQ_MIRROR...) take precedence.

    \b
    aq config set mirror https://mirror.example.com/alpine
    aq config
    """
    if ctx.invoked_subcommand is not None:
        return
    from aq import config

    rows = [(key, config.get(key), config.source(key)) for key in config.SETTINGS]
    if as_json:
        print_json({key: {"value": value, "source": src} for key, value, src in rows})
    else:
        print_table(["SETTING", "VALUE", "FROM"], rows)


@config_group.command("get")
@click.argument("key", shell_complete=complete.setting_key)
def get(key: str) -> None:
    """Print the effective value of one setting."""
    from aq import config

    echo(config.get(key) or "")


@config_group.command("set")
@click.argument("key", shell_complete=complete.setting_key)
@click.argument("value")
def set_(key: str, value: str) -> None:
    """Store a setting."""
    from aq import config

    config.set_value(key, value)


@config_group.command("unset")
@click.argument("key", shell_complete=complete.setting_key)
def unset(key: str) -> None:
    """Remove a stored setting (back to the default)."""
    from aq import config

    config.set_value(key, None)


COMMANDS = [config_group]
