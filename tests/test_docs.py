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


def _readme_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_script", REPO / "scripts" / "readme.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_sections_match_the_code() -> None:
    script = _readme_script()
    names = set(re.findall(r"<!-- generated: ([\w-]+) -->", README))
    assert names == set(script.SECTIONS), "every generated section is in the README once"
    assert script.render(README) == README, "README is out of date: run scripts/readme.py"


def test_a_changed_table_is_caught() -> None:
    script = _readme_script()
    drifted = README.replace("| halt | stopping | stopped |", "| halt | running | stopped |")
    assert drifted != README
    assert script.render(drifted) == README
