"""Shell completion through click's own protocol, run as the shells run it: a subprocess
with _AQ_COMPLETE set. Names come from a real database; a Tab press changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def complete(shell: str, words: str, home: Path) -> list[str]:
    """What `aq` offers for the last (possibly empty) word of `words` in `shell`."""
    parts = words.split(" ")
    env = {**os.environ, "AQ_HOME": str(home), "_AQ_COMPLETE": f"{shell}_complete"}
    env["COMP_WORDS"] = words
    env["COMP_CWORD"] = parts[-1] if shell == "fish" else str(len(parts) - 1)
    done = subprocess.run(
        [sys.executable, "-m", "aq"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    out = [line for line in done.stdout.splitlines() if line]
    if shell == "bash":  # "type,value" per line
        return [line.split(",", 1)[1] for line in out]
    if shell == "zsh":  # type, value, help: three lines each
        return [out[i + 1] for i in range(0, len(out), 3)]
    return [line.split(",", 1)[1].split("\t")[0] for line in out]  # fish: "type,value\thelp"


@pytest.fixture
def populated(aq, base_image, aq_home: Path) -> Path:
    for name in ("web-1", "web-2", "db"):
        assert aq("new", name).exit_code == 0
    assert aq("rm", "db").exit_code == 0  # removed: history, not a name to type
    return aq_home


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_vm_names(populated: Path, shell: str) -> None:
    assert complete(shell, "aq status ", populated) == ["web-1", "web-2"]
    assert complete(shell, "aq start web-", populated) == ["web-1", "web-2"]
    assert complete(shell, "aq exec web-2", populated) == ["web-2"]


def test_other_arguments(populated: Path, base_image) -> None:
    assert complete("bash", "aq images rm ", populated) == [str(base_image.id)]
    assert complete("zsh", "aq images rm ", populated) == [str(base_image.id)]
    assert complete("bash", "aq config get m", populated) == ["mirror"]
    offered = complete("bash", "aq cp w", populated)
    assert offered == ["web-1:", "web-2:", "w"]  # the last one: the shell's own file names
    assert complete("bash", "aq st", populated) == ["start", "status", "stop"]


def test_image_help_names_the_kind(populated: Path, base_image) -> None:
    env = {**os.environ, "AQ_HOME": str(populated), "_AQ_COMPLETE": "zsh_complete"}
    env.update(COMP_WORDS="aq images rm ", COMP_CWORD="3")
    done = subprocess.run([sys.executable, "-m", "aq"], cwd=REPO, env=env, capture_output=True)
    assert done.stdout.decode().splitlines() == ["plain", str(base_image.id), "base 3.23.6"]


def test_a_tab_press_makes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "never-made"
    for shell in ("bash", "zsh", "fish"):
        assert complete(shell, "aq rm ", home) == []
    assert not home.exists()


def test_an_unreadable_database_completes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "aq.db").write_bytes(b"not a database at all" * 100)
    assert complete("bash", "aq status ", home) == []
    assert (home / "aq.db").read_bytes() == b"not a database at all" * 100


def test_bash_source_is_a_script() -> None:
    env = {**os.environ, "_AQ_COMPLETE": "bash_source"}
    for shell in ("bash", "zsh", "fish"):
        env["_AQ_COMPLETE"] = f"{shell}_source"
        done = subprocess.run(
            [sys.executable, "-m", "aq"], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0 and "_AQ_COMPLETE" in done.stdout


def _zsh(words: str, home: Path) -> list[tuple[str, str]]:
    """(value, help) pairs zsh is offered for the last word of `words`."""
    env = {**os.environ, "AQ_HOME": str(home), "_AQ_COMPLETE": "zsh_complete"}
    env.update(COMP_WORDS=words, COMP_CWORD=str(len(words.split(" ")) - 1))
    done = subprocess.run(
        [sys.executable, "-m", "aq"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    out = done.stdout.splitlines()
    return [(out[i + 1], out[i + 2]) for i in range(0, len(out), 3)]


@pytest.fixture
def with_snapshots(aq, populated: Path) -> Path:
    """Snapshots 'golden' and 'gold-live' of web-1 (the latter recorded as holding memory),
    and 'other' of web-2."""
    from aq.store.db import writing
    from aq.store.models import Image, SavedState

    for vm, tag in (("web-1", "golden"), ("web-1", "gold-live"), ("web-2", "other")):
        assert aq("snapshot", "create", vm, tag).exit_code == 0
    with writing() as session:
        image = session.query(Image).filter_by(tag="gold-live").one()
        session.add(
            SavedState(
                image_id=image.id,
                path=str(populated / "memory.state"),
                size=1,
                qemu_version="7.2",
                machine="pc",
                accel="tcg",
                arch="x86_64",
                memory_mib=1024,
                argv="[]",
                disk="x",
            )
        )
    return populated


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_snapshot_tags(with_snapshots: Path, shell: str) -> None:
    home = with_snapshots
    assert complete(shell, "aq snapshot rm ", home) == ["gold-live", "golden", "other"]
    assert complete(shell, "aq snapshot rm gol", home) == ["gold-live", "golden"]
    assert complete(shell, "aq new web --from g", home) == ["gold-live", "golden"]
    assert complete(shell, "aq new web --count 2 --from o", home) == ["other"]
    assert complete(shell, "aq snapshot create w", home) == ["web-1", "web-2"]
    assert complete(shell, "aq snapshot create web-1 ", home) == []  # a new tag: nothing to list


def test_snapshot_tag_help_says_what_it_holds(with_snapshots: Path) -> None:
    assert _zsh("aq snapshot rm gol", with_snapshots) == [
        ("gold-live", "live (disk and memory)"),
        ("golden", "disk only"),
    ]


def test_vm_names_complete_wherever_a_vm_is_the_argument(populated: Path) -> None:
    for words in (
        "aq status ",
        "aq rm ",
        "aq history ",
        "aq start ",
        "aq stop ",
        "aq suspend ",
        "aq exec ",
        "aq console ",
        "aq ssh ",
        "aq snapshot create ",
        "aq exec --timeout 3 ",
    ):
        assert complete("bash", words, populated) == ["web-1", "web-2"], words


def test_every_vm_snapshot_or_image_argument_has_a_completer() -> None:
    """A new command whose NAME, TAG or IMAGE_ID is typed by hand fails here."""
    import click

    from aq.cli import complete as completers
    from aq.cli.main import cli

    def walk(command: click.Command, path: str):
        yield path, command
        if isinstance(command, click.Group):
            for name in command.list_commands(click.Context(command)):
                yield from walk(command.get_command(click.Context(command), name), f"{path} {name}")

    expected = {
        "name": completers.vm_name,
        "tag": completers.snapshot_tag,
        "image_id": completers.image_id,
        "source": completers.vm_or_path,
        "dest": completers.vm_or_path,
    }
    new_things = {("aq new", "name"), ("aq snapshot create", "tag")}  # names not yet taken
    checked = 0
    for path, command in walk(cli, "aq"):
        for param in command.params:
            if param.name not in expected or (path, param.name) in new_things:
                continue
            assert param._custom_shell_complete is expected[param.name], (path, param.name)
            checked += 1
    assert checked == 15  # 10 VM names, 2 tags, 1 image id, cp's 2 sides
