"""Printing results: aligned tables for people, JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click

from aq.errors import output_error

# Commands set ctx.meta[FAILURE_CODE] when their own exit status belongs to something
# else (aq exec passes the guest's through), so aq's failures must use another code.
FAILURE_CODE = "aq.failure_code"


def json_option(command):
    """The --json flag every listing and action command takes (one spelling)."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(command)


def iso(when: datetime | None) -> str | None:
    """A stored (naive UTC) time as ISO 8601 with a Z, for JSON."""
    return None if when is None else when.isoformat(timespec="microseconds") + "Z"


def echo(message: str, err: bool = False) -> None:
    """click.echo, whose failure is aq.errors.output_error's: a reader that went away
    (`aq ls | head -1`) ends aq quietly (aq.cli.report.reader_gone), any other is one
    error line."""
    try:
        click.echo(message, err=err)
    except OSError as failed:
        raise output_error(failed) from None


def print_json(data: Any) -> None:
    echo(json.dumps(data, indent=2, sort_keys=False))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Columns padded to their widest cell; the last column is not padded."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        line = "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True))
        echo(f"{line}  {row[-1]}".rstrip() if len(row) > 1 else row[0])


def note(message: str) -> None:
    """A message for people, on stderr, so stdout stays clean for scripts."""
    echo(message, err=True)
