"""Every error aq raises on purpose, under one root.

    AqError                      exit 1   something aq tried failed (QEMU, download, install)
     ├── InvalidInput            exit 2   a name, size, port spec or option is malformed
     ├── NotFound                exit 3   no such VM or image
     ├── Conflict                exit 4   name/port taken, resource in use, needs --force
     ├── WrongState              exit 5   the VM is not in a state that allows the action
     ├── Offline                 exit 6   the Alpine mirror cannot be reached
     ├── VerificationFailed      exit 7   checksum or OpenPGP signature mismatch
     └── GuestTimeout            exit 8   the guest did not answer in time

The CLI prints `Error: <message>` and, on the same line, the hint that says what to do
next; it never shows a traceback unless asked to (--debug or AQ_DEBUG=1). Usage errors
found by click itself also exit 2. `aq exec` and `aq ssh` pass the guest command's status
through, so when aq itself fails there it exits 255 instead (as ssh does).
"""

from __future__ import annotations

EXEC_FAILURE = 255


class OutputClosed(Exception):
    """Whoever reads aq's output went away (a closed pipe, as in `aq ls | head -1` or
    `aq exec VM -- seq 1000000 | head -1`): the end of their reading, not a failure."""


class AqError(Exception):
    """Root of aq's errors: a one-line message, a hint, and an exit code."""

    exit_code = 1
    default_hint = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = self.default_hint if hint is None else hint

    def one_line(self) -> str:
        """The message and hint as the single line the user sees."""
        text = self.message.rstrip(".")
        if self.hint:
            return f"{text}. Hint: {self.hint}"
        return text


class InvalidInput(AqError):
    exit_code = 2


class NotFound(AqError):
    exit_code = 3
    default_hint = "`aq ls` lists your VMs"


class Conflict(AqError):
    exit_code = 4


class WrongState(AqError):
    exit_code = 5

    def __init__(self, name: str, state: str, action: str, hint: str | None = None) -> None:
        super().__init__(f"cannot {action} VM '{name}': it is {state}", hint)
        self.name = name
        self.state = state
        self.action = action


class Offline(AqError):
    exit_code = 6


class VerificationFailed(AqError):
    exit_code = 7


class GuestTimeout(AqError):
    exit_code = 8


class OutputFailed(AqError):
    """Writing aq's output (or a guest command's) failed on the host: a full disk, say."""

    def __init__(
        self, why: str, hint: str = "check where stdout and stderr go (a full disk?)"
    ) -> None:
        super().__init__(f"cannot write the output: {why}", hint=hint)


def output_error(err: OSError) -> Exception:
    """What a failed write to stdout or stderr means: its reader went away (a closed
    pipe: OutputClosed, a quiet end) or it failed (OutputFailed, one line)."""
    if isinstance(err, BrokenPipeError):
        return OutputClosed()
    return OutputFailed(err.strerror or str(err))


EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "an operation failed (QEMU, download, install); the message says which",
    2: "usage error or invalid input (bad name, size, port spec, option)",
    3: "no such VM or image",
    4: "conflict: name or port taken, resource in use, or refused without `--force`",
    5: "the VM is in a state that does not allow the action",
    6: "the Alpine mirror cannot be reached",
    7: "a download failed its checksum or signature check",
    8: "the guest did not answer in time",
    124: "`aq exec --timeout`: the command was killed when its time ran out",
    141: "killed by SIGPIPE, as `cat` is: whoever read aq's output went away "
    "(`aq ls` into `head -1`); `aq exec` then stops the guest command",
    EXEC_FAILURE: "`aq exec` / `aq ssh`: aq itself failed (otherwise they exit with the "
    "guest command's own status); any command: the guest's agent could not start a command",
}
