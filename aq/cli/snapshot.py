"""`aq suspend` and `aq snapshot create/ls/rm`."""

from __future__ import annotations

import click

from aq.cli import complete
from aq.cli.output import echo, iso, json_option, note, print_json, print_table
from aq.cli.render import vm_dict
from aq.units import format_size


@click.command("suspend")
@click.argument("name", shell_complete=complete.vm_name)
@json_option
def suspend(name: str, as_json: bool) -> None:
    """Save a running VM's memory and stop it; `aq start` resumes it where it was.

    \b
    aq suspend guest-1 && aq start guest-1
    """
    from aq.suspend import suspend as do_suspend

    outcome = do_suspend(name)
    if as_json:
        print_json({**vm_dict(outcome.vm), "changed": outcome.changed})
    else:
        note(outcome.message)


@click.group("snapshot", invoke_without_command=False)
def snapshot() -> None:
    """Freeze VMs as tags and spawn VMs from them (`aq new NAME --from TAG`).

    \b
    aq snapshot create guest-1 ready && aq new web --from ready --count 3
    """


@snapshot.command("create")
@click.argument("name", shell_complete=complete.vm_name)
@click.argument("tag")
@json_option
def create(name: str, tag: str, as_json: bool) -> None:
    """Snapshot a VM as TAG: its disk, and its memory too if it is running.

    \b
    aq snapshot create guest-1 ready
    """
    from aq import clones, snapshots

    image = snapshots.create(name, tag)
    row = next(r for r in clones.listing() if r.id == image.id)
    if as_json:
        print_json(_row_dict(row))
    else:
        kind = "live (disk and memory)" if row.memory else "disk only"
        note(f"snapshot {row.tag} of {name}: {kind}, {format_size(row.size)}")
        if row.tag != tag:  # another snapshot took the tag while this one was made
            note(f"the tag {tag} was taken meanwhile: this snapshot is tagged {row.tag}")


def _row_dict(row) -> dict:
    return {
        "tag": row.tag,
        "id": row.id,
        "parent": row.parent,
        "parent_id": row.parent_id,
        "path": row.path,
        "size": row.size,
        "memory": row.memory,
        "memory_size": row.memory_size,
        "used_by": row.used_by,
        "children": row.children,
        "created_at": iso(row.created_at),
    }


@snapshot.command("ls")
@click.option("--tree", is_flag=True, help="Show snapshots as a tree of parents and children.")
@json_option
def ls(tree: bool, as_json: bool) -> None:
    """List snapshots: tag, parent, size, memory or not, the VMs using each.

    \b
    aq snapshot ls --tree
    """
    from aq import clones

    rows = clones.listing()
    if as_json:
        print_json([_row_dict(r) for r in rows])
    elif tree:
        _print_tree(rows)
    else:
        print_table(
            ["TAG", "PARENT", "SIZE", "MEMORY", "USED BY"],
            [
                [r.tag, r.parent, format_size(r.size), _yes(r.memory), ", ".join(r.used_by)]
                for r in rows
            ],
        )


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _print_tree(rows) -> None:
    by_id = {r.id: r for r in rows}

    def show(row, depth: int) -> None:
        memory = ", memory" if row.memory else ""
        users = f" <- {', '.join(row.used_by)}" if row.used_by else ""
        echo(f"{'  ' * depth}{row.tag} ({format_size(row.size)}{memory}){users}")
        for child in rows:
            if child.parent_id == row.id:
                show(child, depth + 1)

    roots = [r for r in rows if r.parent_id not in by_id]
    for parent in sorted({r.parent or "-" for r in roots}):
        echo(parent)
        for row in roots:
            if (row.parent or "-") == parent:
                show(row, 1)


@snapshot.command("rm")
@click.argument("tag", shell_complete=complete.snapshot_tag)
def rm(tag: str) -> None:
    """Remove a snapshot; refused (exit 4) while a VM or snapshot stands on it.

    \b
    aq snapshot rm ready
    """
    from aq import clones

    clones.remove(tag)
    note(f"removed snapshot {tag}")


COMMANDS = [suspend, snapshot]
