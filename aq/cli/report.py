"""How an error that escapes a command is shown: one line and an exit code.

Shared by click's group (aq.cli.main) and `aq exec`'s click-free path (aq.cli.entry),
so both print the same line and exit with the same code.
"""

from __future__ import annotations

import os
import sys

from aq.errors import AqError, OutputFailed


def failure(err: BaseException, code: int | None = None) -> tuple[str, int]:
    """The line after "Error: " and the exit code for `err`; `code` replaces aq's own
    code (aq exec and aq ssh: 255, since the guest command owns the others)."""
    if isinstance(err, KeyboardInterrupt):
        return "interrupted", 130
    if isinstance(err, AqError):
        return err.one_line(), err.exit_code if code is None else code
    first = (str(err).strip().splitlines() or [""])[0]
    line = f"unexpected {type(err).__name__}: {first}. Hint: run with --debug for details"
    return line, 1 if code is None else code


def reader_gone() -> None:  # never returns (typing.NoReturn would cost an import)
    """End as `cat` does when whoever reads its output goes away (`aq exec VM -- CMD |
    head -1`): at once, silently, by SIGPIPE (which Python ignores, so it is taken back
    here). The command channel closes with aq, and the guest's agent then stops the
    command, as sshd does."""
    import signal

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGPIPE)
    os._exit(128 + signal.SIGPIPE)  # only if the signal did not end the process


def binary_stdio() -> tuple:
    """stdout's and stderr's byte streams, for a guest command's output; a closed one
    (`aq exec VM -- CMD >&-`) is aq's one-line failure, as cat's write error is."""
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            raise OutputFailed(f"{name} is closed", hint="redirect it, to /dev/null to drop it")
    return sys.stdout.buffer, sys.stderr.buffer


def debugging(flag: bool = False) -> bool:
    """--debug, or AQ_DEBUG set to anything but 0: tracebacks are shown."""
    return flag or os.environ.get("AQ_DEBUG", "") not in ("", "0")


def show(line: str, with_traceback: bool) -> None:
    """Print the error line on stderr (the traceback first, if asked); call it from
    inside the `except` block, where the traceback is still at hand."""
    if with_traceback:
        import traceback

        traceback.print_exc()
    print(f"Error: {line}", file=sys.stderr, flush=True)
