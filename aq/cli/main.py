"""The `aq` command group and the one place where errors become exit codes."""

from __future__ import annotations

import sys

import click

from aq.cli.output import FAILURE_CODE
from aq.cli.report import debugging, failure, reader_gone, show
from aq.errors import AqError, OutputClosed


def _debugging(ctx: click.Context) -> bool:
    return debugging(bool(ctx.find_root().params.get("debug")))


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:  # only then is aq.cli.doctor (which finds QEMU) imported
        from aq.cli.doctor import print_version

        print_version(ctx, param, value)


class AqGroup(click.Group):
    """A click group that prints aq's errors as one line and exits with their code."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (AqError, KeyboardInterrupt) as err:
            self._fail(ctx, *failure(err, ctx.meta.get(FAILURE_CODE)))
        except OutputClosed:  # `aq ls | head -1`: the reader has what it wanted
            reader_gone()
        except click.UsageError as err:
            self._fail(ctx, _usage_line(err), ctx.meta.get(FAILURE_CODE, err.exit_code))
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as err:  # a bug: say so briefly, details with --debug
            self._fail(ctx, *failure(err, ctx.meta.get(FAILURE_CODE)))

    @staticmethod
    def _fail(ctx: click.Context, line: str, code: int) -> None:
        show(line, _debugging(ctx))
        ctx.exit(code)


def _usage_line(err: click.UsageError) -> str:
    """A bad option or argument as the README's one line (click prints three)."""
    where = err.ctx.command_path if err.ctx is not None else "aq"
    text = " ".join(err.format_message().split()).rstrip(".")
    end = "" if text.endswith(("?", "!")) else "."
    return f"{text}{end} Hint: see `{where} --help`"


@click.group(cls=AqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show aq's version and the QEMU it will use.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def cli(debug: bool) -> None:
    """aq: Alpine Linux virtual machines on QEMU.

    \b
    aq new guest-1 && aq start guest-1
    aq exec guest-1 -- uname -a
    aq console guest-1
    """


# Where each command lives, in the order `aq --help` and the README list them. Only
# the module of the command being run is imported: `aq exec` never pays for `aq new`.
MODULES: dict[str, tuple[str, ...]] = {
    "vms": ("new", "ls", "status", "rm", "history"),
    "power": ("start", "stop"),
    "snapshot": ("suspend", "snapshot"),
    "access": ("exec", "console", "ssh", "cp"),
    "images": ("images",),
    "configure": ("config",),
    "info": ("db",),
    "doctor": ("doctor",),
}
_HOME = {name: module for module, names in MODULES.items() for name in names}


class LazyCommands(dict):
    """A group's commands, imported on demand: a lookup loads one module, a listing
    loads them all (in MODULES order)."""

    def _load(self, module: str) -> None:
        from importlib import import_module

        for command in import_module(f"aq.cli.{module}").COMMANDS:
            dict.setdefault(self, command.name, command)

    def _wants(self, name: object) -> None:
        if isinstance(name, str) and not dict.__contains__(self, name) and name in _HOME:
            self._load(_HOME[name])

    def _everything(self) -> list[str]:
        for module in MODULES:
            self._load(module)
        known = [n for names in MODULES.values() for n in names if dict.__contains__(self, n)]
        return known + [n for n in dict.keys(self) if n not in _HOME]

    def get(self, name, default=None):  # type: ignore[override]
        self._wants(name)
        return dict.get(self, name, default)

    def __getitem__(self, name):  # type: ignore[override]
        self._wants(name)
        return dict.__getitem__(self, name)

    def __contains__(self, name: object) -> bool:
        self._wants(name)
        return dict.__contains__(self, name)

    def __iter__(self):  # type: ignore[override]
        return iter(self._everything())

    def __len__(self) -> int:
        return len(self._everything())

    def keys(self):  # type: ignore[override]
        return self._everything()

    def values(self):  # type: ignore[override]
        return [dict.__getitem__(self, n) for n in self._everything()]

    def items(self):  # type: ignore[override]
        return [(n, dict.__getitem__(self, n)) for n in self._everything()]


cli.commands = LazyCommands()


def main() -> None:
    """click alone (the program's entry point is aq.cli.entry.main)."""
    cli.main(prog_name="aq")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
