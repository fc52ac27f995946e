"""The `aq` program's entry point, and `aq exec`'s hot path, which needs no click.

Scripts call `aq exec NAME -- CMD` in loops, so its cost is mostly what a run imports:
importing click alone is about a third of one. The plain form (exactly `aq exec NAME
-- CMD [ARGS...]`, on a VM that aq.store.peek sees running) is served here without
click; every other command line, that form on a VM that is not surely running
included, goes to click (aq.cli.main), which parses it the same way and explains.
Both report errors through `failure`, so they print the same line and exit code.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys

from aq.cli.report import binary_stdio, debugging, failure, reader_gone, show
from aq.errors import EXEC_FAILURE, OutputClosed

# How long a run goes without cyclic garbage collection (see _collect_later).
GC_PAUSE_S = 1.0


def _collect_later() -> None:
    """Keep Python's cycle collector off while the command's modules load.

    Importing SQLAlchemy and mapping aq's tables makes a few hundred thousand objects
    that live as long as the process; the collector scanning them while they are made
    cost about 60 ms of a 0.5 s `aq new` (one full and some 130 young collections).
    Most runs end before GC_PAUSE_S; a longer one (start, console, a long exec) gets
    the collector back then, with what exists by then frozen (never scanned again).
    The timer thread is started with every signal blocked, so Ctrl-C and the like are
    always delivered to the main thread.
    """
    import threading  # here: a plain `aq exec` never needs it

    gc.disable()
    timer = threading.Timer(GC_PAUSE_S, _collect_again)
    timer.daemon = True
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        timer.start()  # the new thread inherits the mask: no signal is ever its
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _collect_again() -> None:
    gc.freeze()
    gc.enable()


def surely_running(name: str) -> bool:
    """Whether the store says `name` runs and its QEMU is alive, read without
    SQLAlchemy: the common case of `aq exec` then costs no ORM import. When this says
    no, the full store decides (aq.cli.access), which corrects the record and explains."""
    from aq import paths
    from aq.qemu import process
    from aq.store import peek

    recorded = peek.running_vm(name)
    if recorded is None:
        return False
    return process.is_alive(process.Identity(*recorded), paths.vm_files(name).pidfile)


def plain_exec(argv: list[str]) -> tuple[str, list[str]] | None:
    """(NAME, CMD) when `argv` is exactly `exec NAME -- CMD...`, else None."""
    if len(argv) < 4 or argv[0] != "exec" or argv[2] != "--":
        return None
    name = argv[1]
    if not name or name.startswith("-"):
        return None
    return name, argv[3:]


def run_exec(name: str, command: list[str], timeout: float | None = None) -> int:
    """Run `command` in VM `name` with this process's stdin (unless a terminal), stdout
    and stderr; its exit status. Both exec paths (this one and click's) end here."""
    from aq import paths
    from aq.guest import channel

    stdin = None if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer
    options = channel.ExecOptions(stdin, *binary_stdio(), timeout)
    try:
        return channel.run(paths.vm_files(name), command, options)
    except OutputClosed:
        reader_gone()


def fast_exec(argv: list[str]) -> int | None:
    """The exit status of a plain `aq exec` on a running VM; None: click's turn."""
    plain = plain_exec(argv)
    if plain is None:
        return None
    try:
        if not surely_running(plain[0]):
            return None
        return run_exec(*plain)
    except (Exception, KeyboardInterrupt) as err:
        line, code = failure(err, EXEC_FAILURE)
        show(line, debugging())
        return code


def _leave(status: int) -> None:
    """End a plain exec at once: flush stdout and stderr as Python's exit would, and
    skip its teardown of every module (about 8 ms of a run, measured): nothing on this
    path registers exit handlers or holds a file that is not already closed. Output the
    reader no longer takes (a closed pipe) is dropped, and the status stays the
    command's."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:  # None: closed when aq started (>&-)
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
    os._exit(status)


def main() -> None:
    status = fast_exec(sys.argv[1:])  # few objects made: no collector pause needed
    if status is not None:
        _leave(status)
    _collect_later()
    from aq.cli.main import cli

    cli.main(prog_name="aq")
