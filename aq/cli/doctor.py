"""`aq doctor` and `aq --version`: what aq needs from this host, said before it is needed."""

from __future__ import annotations

import shutil

import click

from aq import __version__
from aq.cli.output import echo, json_option, print_json


@click.command("doctor")
@json_option
def doctor(as_json: bool) -> None:
    """Check what aq needs: QEMU, an accelerator, firmware, disk, AQ_HOME, the mirror.

    Exits 0 when aq can work here (warnings included), 1 otherwise. Changes nothing.

    \b
    aq doctor
    aq doctor --json | jq '.checks[] | select(.status != "ok")'
    """
    from aq import doctor as checks

    results = checks.run_checks()
    ok = checks.healthy(results)
    if as_json:
        print_json({"ok": ok, "checks": [c.as_dict() for c in results]})
    else:
        width = max(len(c.name) for c in results)
        for c in results:
            hint = f". Hint: {c.hint}" if c.hint and c.status != "ok" else ""
            echo(f"{c.status:<4}  {c.name:<{width}}  {c.detail}{hint}")
    if not ok:
        raise click.exceptions.Exit(1)


def version_text() -> str:
    """aq's version and the QEMU a VM would run with (found, not started: no VM boots)."""
    from aq import host
    from aq.doctor import qemu_version

    try:
        arch = host.guest_arch()
    except Exception as err:  # an unsupported host still gets aq's version
        return f"aq {__version__}\nqemu: {err}"
    name = f"qemu-system-{arch}"
    binary = shutil.which(name)
    if binary is None:
        return f"aq {__version__}\nqemu: {name} not found (see `aq doctor`)"
    version = qemu_version(binary) or "unknown version"
    return f"aq {__version__}\nqemu: {binary} ({version})"


def print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    echo(version_text())
    ctx.exit(0)


COMMANDS = [doctor]
