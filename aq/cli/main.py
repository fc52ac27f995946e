"""The `aq` command group and the one place where errors become exit codes."""

from __future__ import annotations

import os
import sys
import traceback

import click

from aq import __version__
from aq.cli.output import FAILURE_CODE
from aq.errors import AqError


def _debugging(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool(root.params.get("debug")) or os.environ.get("AQ_DEBUG", "") not in ("", "0")


class AqGroup(click.Group):
    """A click group that prints aq's errors as one line and exits with their code."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except AqError as err:
            self._fail(ctx, err.one_line(), ctx.meta.get(FAILURE_CODE, err.exit_code))
        except KeyboardInterrupt:
            self._fail(ctx, "interrupted", 130)
        except click.UsageError as err:
            self._fail(ctx, _usage_line(err), ctx.meta.get(FAILURE_CODE, err.exit_code))
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as err:  # a bug: say so briefly, details with --debug
            self._fail(
                ctx,
                f"unexpected {type(err).__name__}: {str(err).strip().splitlines()[0]}. "
                "Hint: run with --debug for details",
                ctx.meta.get(FAILURE_CODE, 1),
            )

    @staticmethod
    def _fail(ctx: click.Context, line: str, code: int) -> None:
        if _debugging(ctx):
            traceback.print_exc()
        click.echo(f"Error: {line}", err=True)
        ctx.exit(code)


def _usage_line(err: click.UsageError) -> str:
    """A bad option or argument as the README's one line (click prints three)."""
    where = err.ctx.command_path if err.ctx is not None else "aq"
    text = " ".join(err.format_message().split()).rstrip(".")
    end = "" if text.endswith(("?", "!")) else "."
    return f"{text}{end} Hint: see `{where} --help`"


@click.group(cls=AqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aq")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def cli(debug: bool) -> None:
    """aq: Alpine Linux virtual machines on QEMU.

    \b
    aq new guest-1 && aq start guest-1
    aq exec guest-1 -- uname -a
    aq console guest-1
    """


def _register() -> None:
    from aq.cli import access, configure, images, info, power, snapshot, vms

    for module in (vms, power, snapshot, access, images, configure, info):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    cli.main(prog_name="aq")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
