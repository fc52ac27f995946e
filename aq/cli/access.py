"""Guest access: aq exec, aq console, aq ssh, aq cp."""

from __future__ import annotations

import os
import sys

import click

from aq.cli import complete
from aq.cli.entry import run_exec
from aq.cli.entry import surely_running as _surely_running
from aq.cli.output import FAILURE_CODE, echo, note
from aq.errors import EXEC_FAILURE


def _running(name: str):
    """The VM, which must be running (its record first made true)."""
    from aq import vm
    from aq.errors import WrongState
    from aq.lifecycle import State

    found = vm.get(name)
    if found.state != State.RUNNING:
        raise WrongState(name, found.state, "reach", hint=f"start it with `aq start {name}`")
    return found


@click.command(
    "exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.option("--timeout", type=float, help="Kill the command after this many seconds (exit 124).")
@click.argument("name", shell_complete=complete.vm_name)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec_(ctx: click.Context, timeout: float | None, name: str, command: tuple[str, ...]) -> None:
    """Run a command in the VM as root; its exit status is aq's.

    Arguments arrive exactly as given; stdin is passed through when it is not a
    terminal; stdout and stderr stay apart. Ctrl-C interrupts the guest command.
    aq's own failures exit 255.

    \b
    aq exec guest-1 -- uname -a
    aq exec guest-1 -- sh -s < setup.sh
    tar c . | aq exec guest-1 -- tar x -C /srv
    """
    ctx.meta[FAILURE_CODE] = EXEC_FAILURE
    argv = list(command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise click.UsageError("no command given; write aq exec NAME -- CMD [ARGS...]")
    if not _surely_running(name):
        _running(name)
    ctx.exit(run_exec(name, argv, timeout))


def _only_running_vm() -> str:
    from aq import vm
    from aq.errors import InvalidInput
    from aq.lifecycle import State

    running = [v.name for v in vm.list_vms() if v.state == State.RUNNING]
    if len(running) == 1:
        return running[0]
    if not running:
        raise InvalidInput("no VM is running", hint="start one with `aq start NAME`")
    raise InvalidInput(
        f"{len(running)} VMs are running ({', '.join(running)})", hint="name the one you want"
    )


@click.command("console")
@click.argument("name", required=False, shell_complete=complete.vm_name)
@click.option(
    "--telnet",
    "telnet_port",
    type=int,
    is_flag=False,
    flag_value=0,
    default=None,
    metavar="[PORT]",
    help="Serve the console on 127.0.0.1 for a telnet client of yours (no other user).",
)
def console(name: str | None, telnet_port: int | None) -> None:
    """Attach this terminal to a VM's serial console; detach with Ctrl-].

    NAME may be left out when exactly one VM is running.

    \b
    aq console guest-1
    aq console guest-1 --telnet 10023   # then: telnet 127.0.0.1 10023
    """
    from aq import paths
    from aq.console import attach, telnet

    name = name or _only_running_vm()
    _running(name)
    files = paths.vm_files(name)
    if telnet_port is None:
        attach.attach(files, name)
        return
    server = telnet.listen(telnet_port)

    def ready(port: int, token: str) -> None:
        echo(f"telnet 127.0.0.1 {port}")
        note(f"serving the console of '{name}' on 127.0.0.1:{port} to you only; Ctrl-C to stop")
        note(f"if the client is asked for a token, type: {token}")
        sys.stdout.flush()

    try:
        telnet.serve(files, name, server, ready)
    except KeyboardInterrupt:
        note("stopped serving the console")
    finally:
        server.close()


@click.command(
    "ssh", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.option("--dry-run", is_flag=True, help="Print the ssh command instead of running it.")
@click.argument("name", shell_complete=complete.vm_name)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def ssh(ctx: click.Context, dry_run: bool, name: str, command: tuple[str, ...]) -> None:
    """SSH into a VM as root with aq's key, checking the VM's recorded host key.

    \b
    aq ssh guest-1
    aq ssh guest-1 -- uname -a
    """
    ctx.meta[FAILURE_CODE] = EXEC_FAILURE
    import shlex

    from aq import paths
    from aq import ssh as ssh_mod
    from aq.cli.render import ssh_port
    from aq.vm import record_host_key

    remote = list(command)
    if remote and remote[0] == "--":
        remote = remote[1:]
    found = _running(name)
    files = paths.vm_files(name)
    # The host key read over the command channel the first time is kept; later runs
    # check the guest against that record instead of trusting whatever it says now.
    key, host_key = ssh_mod.prepare(files, name, found.ssh_host_key)
    if host_key != found.ssh_host_key:
        record_host_key(name, host_key)
    port = ssh_port(found)
    argv = ssh_mod.command(name, port, key, files.known_hosts, remote)
    if dry_run:
        echo(shlex.join(argv))
        return
    sys.stdout.flush()
    os.execvp(argv[0], argv)


@click.command("cp")
@click.option("-r", "--recursive", is_flag=True, help="Copy directories.")
@click.argument("source", shell_complete=complete.vm_or_path)
@click.argument("dest", shell_complete=complete.vm_or_path)
def cp(recursive: bool, source: str, dest: str) -> None:
    """Copy files between the host and a VM (one side is NAME:PATH), keeping modes.

    \b
    aq cp ./app guest-1:/srv -r
    aq cp guest-1:/etc/os-release .
    """
    from pathlib import Path

    from aq import paths
    from aq.errors import InvalidInput
    from aq.guest import copy

    src, dst = copy.parse_endpoint(source), copy.parse_endpoint(dest)
    if (src.vm is None) == (dst.vm is None):
        raise InvalidInput("one side of aq cp must be NAME:PATH and the other a host path")
    if dst.vm is not None:
        _running(dst.vm)
        copy.to_guest(paths.vm_files(dst.vm), Path(src.path), dst.path, recursive)
    else:
        assert src.vm is not None
        _running(src.vm)
        copy.from_guest(paths.vm_files(src.vm), src.path, Path(dst.path), recursive)


COMMANDS = [exec_, console, ssh, cp]
