"""Rewrite README.md's generated sections from the code, so the docs cannot drift.

    .venv/bin/python scripts/readme.py           rewrite README.md in place
    .venv/bin/python scripts/readme.py --check   exit 1 if README.md is out of date

A generated section sits between `<!-- generated: NAME -->` and `<!-- end -->`:
`states` (aq.lifecycle.TRANSITIONS), `exit-codes` (aq.errors.EXIT_CODES) and `commands`
(the click command tree: usage, the first line of each command's help, its options).
tests/test_docs.py fails when README.md differs from what this script writes.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
SECTION = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end -->)", re.S)


def states() -> str:
    from aq.lifecycle import TRANSITIONS, State

    leaving = {state for _, sources, _ in TRANSITIONS for state in sources}
    rows = ["| event | from | to |", "|---|---|---|"]
    for event, sources, dest in TRANSITIONS:
        terminal = " (terminal)" if dest not in leaving and dest != State.CREATED else ""
        rows.append(f"| {event} | {', '.join(s.value for s in sources)} | {dest.value}{terminal} |")
    return "\n".join(rows) + "\n"


def exit_codes() -> str:
    from aq.errors import EXIT_CODES

    rows = ["| code | meaning |", "|---|---|"]
    rows += [f"| {code} | {meaning} |" for code, meaning in EXIT_CODES.items()]
    return "\n".join(rows) + "\n"


def _usage(path: str, command) -> str:
    import click

    ctx = click.Context(command, info_name=path)
    pieces = [p for p in command.collect_usage_pieces(ctx) if p != "[OPTIONS]"]
    if isinstance(command, click.Group):
        pieces = []  # its subcommands get rows of their own
    return " ".join([path, *pieces])


def _options(command) -> str:
    import click

    shown = []
    for param in command.params:
        if not isinstance(param, click.Option) or param.hidden:
            continue
        flag = ", ".join(param.opts)
        if isinstance(param.type, click.Choice):
            flag += " " + "|".join(str(c) for c in param.type.choices)
        elif not param.is_flag and param.metavar:
            flag += f" {param.metavar}"
        default = f" (default {param.default})" if param.show_default else ""
        shown.append(f"`{flag}`{default}".replace("|", "\\|"))
    return ", ".join(shown)


def _summary(command) -> str:
    text = (command.help or "").strip().split("\n\n")[0]
    return " ".join(text.split()).replace("|", "\\|")


def _walk(path: str, command) -> Iterator[tuple[str, object]]:
    import click

    yield path, command
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            yield from _walk(f"{path} {name}", command.commands[name])


def commands() -> str:
    from aq.cli.main import cli

    rows = ["| command | what it does | options |", "|---|---|---|"]
    for name, command in cli.commands.items():
        for path, sub in _walk(f"aq {name}", command):
            usage = _usage(path, sub).replace("|", "\\|")
            rows.append(f"| `{usage}` | {_summary(sub)} | {_options(sub)} |")
    return "\n".join(rows) + "\n"


SECTIONS: dict[str, Callable[[], str]] = {
    "states": states,
    "exit-codes": exit_codes,
    "commands": commands,
}


def render(text: str) -> str:
    """`text` with every generated section rewritten from the code."""

    def fill(match: re.Match[str]) -> str:
        make = SECTIONS[match.group("name")]
        return match.group(1) + make() + match.group(4)

    return SECTION.sub(fill, text)


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(REPO))
    current = README.read_text()
    wanted = render(current)
    if "--check" in argv:
        if wanted != current:
            print("README.md is out of date: run scripts/readme.py", file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        README.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
