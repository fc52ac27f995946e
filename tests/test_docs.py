"""The README stays true: every command documented, the CI runs its test command."""

from __future__ import annotations

import re

from aq.cli.main import cli
from aq.errors import EXIT_CODES
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def _top_commands() -> list[str]:
    block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert block, "README starts with a sh block holding the two commands"
    return [line.split("#")[0].strip() for line in block.group(1).strip().splitlines()]


def test_readme_top_has_setup_and_test_commands() -> None:
    setup, tests = _top_commands()
    assert setup.startswith("bash .ci/setup")
    assert tests == ".venv/bin/python -m pytest"


def test_ci_runs_the_readme_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()
    assert "bash .ci/setup" in ci
    assert ci[-1] == _top_commands()[1]


def test_every_command_is_documented() -> None:
    for name, command in cli.commands.items():
        assert f"`aq {name}" in README, f"aq {name} is missing from the README"
        assert command.help and "\b" in command.help, f"aq {name} --help has no example"


def test_every_exit_code_is_documented() -> None:
    for code in EXIT_CODES:
        if code:
            assert re.search(rf"^\| {code} \|", README, re.M), f"exit code {code} undocumented"
