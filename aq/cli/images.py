"""`aq images`: the ISOs and base disks aq keeps, and the latest release."""

from __future__ import annotations

import click

from aq.cli import complete
from aq.cli.output import echo, json_option, note, print_json, print_table


def _row_dict(row) -> dict:
    return {
        "id": row.id,
        "kind": row.kind,
        "version": row.version,
        "arch": row.arch,
        "path": row.path,
        "size": row.size,
        "used_by": row.used_by,
        "present": row.present,
    }


def _print_rows(rows, as_json: bool) -> None:
    from aq.units import format_size

    if as_json:
        print_json([_row_dict(r) for r in rows])
        return
    print_table(
        ["ID", "KIND", "VERSION", "ARCH", "SIZE", "USED BY", "PATH"],
        [
            [
                r.id,
                r.kind,
                r.version,
                r.arch,
                format_size(r.size),
                ", ".join(r.used_by) or "-",
                r.path if r.present else f"{r.path} (missing)",
            ]
            for r in rows
        ],
    )


@click.group("images", invoke_without_command=True)
@json_option
@click.pass_context
def images(ctx: click.Context, as_json: bool) -> None:
    """List the ISOs and base disks aq keeps, with the VMs that use each.

    \b
    aq images
    aq images refresh && aq images pull
    aq images prune
    """
    if ctx.invoked_subcommand is None:
        from aq.images.manage import list_images

        _print_rows(list_images(), as_json)


@images.command("ls")
@json_option
def ls(as_json: bool) -> None:
    """List images (the same as `aq images`)."""
    from aq.images.manage import list_images

    _print_rows(list_images(), as_json)


@images.command("prune")
@json_option
def prune(as_json: bool) -> None:
    """Remove the ISOs and bases no VM uses (bases that back a VM are kept)."""
    from aq.images.manage import prune as do_prune

    removed = do_prune()
    if as_json:
        print_json([_row_dict(r) for r in removed])
    elif removed:
        _print_rows(removed, False)
    else:
        note("nothing to prune")


@images.command("rm")
@click.argument("image_id", type=click.IntRange(1, 2**63 - 1), shell_complete=complete.image_id)
def rm(image_id: int) -> None:
    """Remove one image by id; refused while a VM's disk stands on it."""
    from aq.images.manage import remove

    row = remove(image_id)
    note(f"removed {row.path}")


@images.command("refresh")
@json_option
@click.option(
    "--allow-older",
    is_flag=True,
    help="Accept a release older than one aq has already seen (a deliberate downgrade).",
)
def refresh(as_json: bool, allow_older: bool) -> None:
    """Ask the mirror for the latest Alpine release (new VMs will use it).

    A mirror offering an older release than aq has seen is refused unless
    --allow-older is given.

    \b
    aq images refresh
    aq images refresh --allow-older
    """
    from aq import host
    from aq.images import releases

    info = releases.refresh(host.guest_arch(), allow_older=allow_older)
    if as_json:
        print_json(
            {
                "version": info.version,
                "arch": info.arch,
                "file": info.file,
                "sha256": info.sha256,
                "mirror": info.mirror,
                "released": info.released,
            }
        )
    else:
        echo(f"latest Alpine for {info.arch}: {info.version} ({info.file})")


@images.command("pull")
@json_option
def pull(as_json: bool) -> None:
    """Download, verify and install the base for the latest release now."""
    from aq.images.base import ensure_base
    from aq.progress import Progress

    base = ensure_base(Progress())
    if as_json:
        print_json({"id": base.id, "version": base.version, "path": base.path})
    else:
        echo(base.path)


COMMANDS = [images]
