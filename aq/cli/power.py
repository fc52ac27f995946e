"""`aq start` and `aq stop`."""

from __future__ import annotations

import click

from aq import defaults
from aq.cli import complete
from aq.cli.output import json_option, note, print_json
from aq.cli.render import vm_dict


@click.command("start")
@click.argument("name", shell_complete=complete.vm_name)
@click.option(
    "--timeout",
    type=float,
    default=defaults.BOOT_TIMEOUT,
    show_default=True,
    help="Seconds to wait for the guest to be ready.",
)
@click.option("--no-wait", is_flag=True, help="Return once QEMU is up.")
@click.option(
    "--accel",
    type=click.Choice(defaults.ACCELS),
    help="Accelerator (default: hvf on macOS, KVM if usable, else TCG; or AQ_ACCEL).",
)
@click.option("--cold", is_flag=True, help="Discard a saved state (aq suspend) and boot.")
@json_option
def start(
    name: str, timeout: float, no_wait: bool, accel: str | None, cold: bool, as_json: bool
) -> None:
    """Boot a VM (or resume its saved state) and wait until it is ready for commands.

    \b
    aq start guest-1 && aq exec guest-1 -- uname -a
    """
    from aq import power

    outcome = power.start(name, wait=not no_wait, timeout=timeout, accel=accel, cold=cold)
    if as_json:
        print_json({**vm_dict(outcome.vm), "changed": outcome.changed})
    else:
        note(outcome.message)


@click.command("stop")
@click.argument("name", shell_complete=complete.vm_name)
@click.option(
    "--timeout",
    type=float,
    default=defaults.STOP_TIMEOUT,
    show_default=True,
    help="Seconds to wait for the guest to power off before falling back.",
)
@click.option("--force", is_flag=True, help="Kill QEMU at once instead of shutting down.")
@json_option
def stop(name: str, timeout: float, force: bool, as_json: bool) -> None:
    """Shut a VM down: ACPI power button, then QMP quit, then kill.

    \b
    aq stop guest-1
    """
    from aq import power

    outcome = power.stop(name, force=force, timeout=timeout)
    if as_json:
        print_json({**vm_dict(outcome.vm), "changed": outcome.changed})
    else:
        note(outcome.message)


COMMANDS = [start, stop]
