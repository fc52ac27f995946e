"""Driving a serial console from a program: wait for a pattern, send a line.

A small expect-like layer over QEMU's console socket, with no tio/expect/socat needed.
Everything the guest prints is appended to a transcript file; when a wait fails, the
error shows the transcript's last lines (made safe for a terminal: the guest chooses
them) and its path. What is kept in memory to match against is bounded (BUFFER_MAX).

Gotchas handled here: the terminal echoes each command, so a marker that appears
literally in a command would match its own echo (markers are printed with printf so
the echo differs); busybox ash asks for the cursor position (ESC[6n) after prompts,
which is simply ignored.
"""

from __future__ import annotations

import base64
import re
import secrets
import select
import socket
import time
from collections.abc import Callable
from pathlib import Path

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from aq.errors import AqError, GuestTimeout
from aq.paths import open_private, short_socket_path
from aq.safetext import for_terminal

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\r")
PROMPT = b"aq-console# "
LOGIN = re.compile(rb"login: ?$", re.M)
BUFFER_MAX = 1 << 20  # bytes of console output kept for matching


def transcript_tail(path: Path, lines: int = 15) -> str:
    """The last readable lines of a transcript, safe to print: CSI sequences removed,
    every other control character shown escaped (no OSC/DCS reaches the terminal)."""
    try:
        data = path.read_bytes()[-8192:]
    except OSError:
        return ""
    text = ANSI.sub(b"", data).decode(errors="replace")
    kept = [line for line in text.splitlines() if line.strip()]
    return for_terminal("\n".join(kept[-lines:]))


class ConsoleError(AqError):
    pass


class Console:
    """A connection to a VM's serial console socket, with a transcript."""

    def __init__(self, sock: socket.socket, transcript: Path) -> None:
        self.sock = sock
        self.transcript = transcript
        self.buffer = b""
        self._log = open_private(transcript, append=True)

    @classmethod
    def connect(
        cls,
        path: Path,
        transcript: Path,
        timeout: float = 30.0,
        why_dead: Callable[[], str | None] = lambda: None,
    ) -> Console:
        """Connect to QEMU's console socket, retrying until QEMU has created it.

        `why_dead` says why QEMU is gone (None while it runs), to stop waiting early.
        """
        address = short_socket_path(path)
        retrying = Retrying(
            retry=retry_if_exception_type(OSError),
            stop=stop_after_delay(timeout),
            wait=wait_fixed(0.1),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    dead = why_dead()
                    if dead is not None:
                        raise ConsoleError(dead)
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    try:
                        sock.connect(address)
                    except OSError:
                        sock.close()
                        raise
        except OSError as err:
            raise ConsoleError(f"cannot connect to the console {path}: {err}") from None
        return cls(sock, transcript)

    def close(self) -> None:
        self.sock.close()
        self._log.close()

    def __enter__(self) -> Console:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fail(self, what: str, timeout: float | None = None) -> GuestTimeout:
        self._log.flush()
        tail = transcript_tail(self.transcript)
        waited = f" within {timeout:.0f}s" if timeout is not None else ""
        return GuestTimeout(
            f"the guest did not {what}{waited}; last console lines:\n{tail}\n"
            f"(full transcript: {self.transcript})",
            hint="",
        )

    def _read(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        ready, _, _ = select.select([self.sock], [], [], min(remaining, 1.0))
        if not ready:
            return True
        data = self.sock.recv(65536)
        if not data:
            raise ConsoleError(
                "the console closed (QEMU exited?); last console lines:\n"
                f"{transcript_tail(self.transcript)}\n(full transcript: {self.transcript})"
            )
        self._log.write(data)
        self._log.flush()
        self.buffer += data
        if len(self.buffer) > BUFFER_MAX:
            self.buffer = self.buffer[-BUFFER_MAX // 2 :]
        return True

    def expect(self, patterns: list[re.Pattern[bytes]], timeout: float, what: str) -> re.Match:
        """Wait until one of `patterns` appears; consume the output up to its end."""
        deadline = time.monotonic() + timeout
        while True:
            clean = ANSI.sub(b"", self.buffer)
            for pattern in patterns:
                match = pattern.search(clean)
                if match:
                    self.buffer = clean[match.end() :]
                    return match
            if not self._read(deadline):
                raise self._fail(what, timeout)

    def drain(self, timeout: float, done: Callable[[], bool]) -> bool:
        """Keep recording the console until `done()` (say, QEMU exited) or `timeout`."""
        deadline = time.monotonic() + timeout
        while not done():
            try:
                if not self._read(min(deadline, time.monotonic() + 0.5)) and (
                    time.monotonic() >= deadline
                ):
                    return False
            except ConsoleError:
                break  # the console closed: QEMU is going away
        return True

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def note(self, text: str) -> None:
        """Record in the transcript what aq did (the guest's echo is turned off)."""
        self._log.write(f"\n[aq] {text}\n".encode())
        self._log.flush()

    def sendline(self, text: str, quiet: bool = False) -> None:
        if not quiet:
            self.note(f"> {text}")
        self.send(text.encode() + b"\r")

    # Shell-level helpers, for a root shell on the console.

    def login(self, timeout: float, user: str = "root") -> None:
        """Wait for a login prompt, log in without a password, set a known prompt."""
        self.sendline("")
        self.expect([LOGIN], timeout, "show a login prompt")
        self.sendline(user)
        self.expect([re.compile(rb"[#$] ?$", re.M)], 60, "give a shell after login")
        self.sendline(f"export PS1='{PROMPT.decode()}'; stty -echo cols 200 2>/dev/null")
        self.run("true", timeout=60)

    def run(
        self, command: str, timeout: float, what: str | None = None, quiet: bool = False
    ) -> tuple[int, str]:
        """Run one shell command line; return its exit status and output."""
        token = secrets.token_hex(4)
        if not quiet:
            self.note(f"> {command}")
        self.sendline(f"{command}; printf 'AQ-RC:%s:%s\\n' {token} $?", quiet=True)
        marker = re.compile(rb"AQ-RC:" + token.encode() + rb":(\d+)\n")
        match = self.expect([marker], timeout, what or f"finish `{command[:60]}`")
        output = match.string[: match.start()].decode(errors="replace")
        return int(match.group(1)), output

    def check(self, command: str, timeout: float, what: str, quiet: bool = False) -> str:
        """Run a command that must succeed; raise with the transcript if it does not."""
        status, output = self.run(command, timeout, what, quiet)
        if status != 0:
            raise ConsoleError(
                f"the guest could not {what} (exit status {status}); last console lines:\n"
                f"{transcript_tail(self.transcript)}\n(full transcript: {self.transcript})"
            )
        return output

    def write_file(self, path: str, content: bytes, mode: int = 0o644) -> None:
        """Create `path` in the guest with exactly `content`, through base64 lines."""
        encoded = base64.b64encode(content).decode()
        lines = [encoded[i : i + 76] for i in range(0, len(encoded), 76)] or [""]
        tmp = f"{path}.aq-b64"
        self.note(f"writing {path} ({len(content)} bytes, base64 over the console)")
        self.check(f": > {tmp}", 30, f"create {tmp}", quiet=True)
        for start in range(0, len(lines), 8):
            chunk = " ".join(lines[start : start + 8])
            self.check(f"printf '%s\\n' {chunk} >> {tmp}", 30, f"write {path}", quiet=True)
        self.check(
            f"base64 -d {tmp} > {path} && rm {tmp} && chmod {mode:o} {path}",
            30,
            f"write {path}",
            quiet=True,
        )
