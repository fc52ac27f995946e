"""The command channel's wire, host side: what the guest sends is parsed here, bounded.

The guest is not trusted: a control line is at most LINE_MAX bytes and each byte is
scanned once, output before a session's marker is at most STALE_MAX bytes, what aq
captures for itself is at most a caller's limit, and the guest's words are made safe
before they are printed. aq.guest.channel drives sessions over these pieces.
"""

from __future__ import annotations

import io
import shlex
import socket
from collections.abc import Iterator, Sequence

from aq.errors import EXEC_FAILURE, AqError, output_error

# What a command's bytes are read from or written to (stdin, stdout, stderr, a capture
# buffer): not typing.BinaryIO, whose import `aq exec` would pay (aq.paths.VmFiles).
BinaryStream = io.BufferedIOBase

CHUNK = 65536
LINE_MAX = 4096  # bytes of one control line from the guest
STALE_MAX = 16 << 20  # bytes skipped on a stream before this session's marker
CAPTURE_MAX = 1 << 20  # default bound of what `capture` collects per stream


class ChannelError(AqError):
    """The command channel failed (the VM stopped, or the agent is not there)."""


class AgentFailed(ChannelError):
    """The guest's agent could not start the command (no work folder, no shell): exit
    255 from every command, as from aq exec, so scripts tell it from their own failures."""

    exit_code = EXEC_FAILURE


class LineReader:
    """Control lines from the guest; each byte is scanned once, a line is at most LINE_MAX."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.scanned = 0  # no newline in buffer[:scanned]

    def feed(self) -> bool:
        data = self.sock.recv(CHUNK)
        self.buffer += data
        return bool(data)

    def lines(self) -> Iterator[str]:
        while True:
            end = self.buffer.find(b"\n", self.scanned)
            if end < 0:
                self.scanned = len(self.buffer)
                if self.scanned > LINE_MAX:
                    raise ChannelError(
                        f"the guest sent a control line longer than {LINE_MAX} bytes",
                        hint="the guest agent is broken or hostile; restart the VM",
                    )
                return
            if end > LINE_MAX:
                self.scanned = end
                raise ChannelError(
                    f"the guest sent a control line longer than {LINE_MAX} bytes",
                    hint="the guest agent is broken or hostile; restart the VM",
                )
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 1]
            self.scanned = 0
            yield line.decode(errors="replace").strip()


class Stream:
    """A guest output stream: skip to this session's marker, then count bytes out."""

    def __init__(self, sock: socket.socket, sink: BinaryStream, marker: bytes) -> None:
        self.sock = sock
        self.sink = sink
        self.marker = marker
        self.synced = False
        self.pending = b""
        self.skipped = 0
        self.received = 0
        self.expected: int | None = None
        self.closed = False

    def on_readable(self) -> None:
        data = self.sock.recv(CHUNK)
        if not data:
            self.closed = True
            return
        if not self.synced:
            self.skipped += len(data)
            self.pending += data
            index = self.pending.find(self.marker)
            if index < 0:
                if self.skipped > STALE_MAX:
                    raise ChannelError(
                        f"the guest sent over {STALE_MAX >> 20} MiB before the session began",
                        hint="the guest agent is broken or hostile; restart the VM",
                    )
                self.pending = self.pending[-len(self.marker) :]
                return
            data = self.pending[index + len(self.marker) :]
            self.pending = b""
            self.synced = True
        if data:
            self.received += len(data)
            try:
                self.sink.write(data)
                self.sink.flush()
            except OSError as err:
                raise output_error(err) from None

    @property
    def complete(self) -> bool:
        return self.expected is not None and self.received >= self.expected


def command_line(argv: Sequence[str]) -> bytes:
    """argv as one shell line, with no newline in it, whose words are exactly argv.

    The guest's agent reads the line with its shell's `read` (no process spawned), so
    an argument with a newline is written in busybox ash's $'...' form, `\\n` for it.
    """
    return " ".join(_quote(arg) for arg in argv).encode("utf-8", "surrogateescape")


def _quote(arg: str) -> str:
    if "\n" not in arg:
        return shlex.quote(arg)
    escaped = arg.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return f"$'{escaped}'"


class Bounded(io.BytesIO):
    """A capture buffer that refuses to grow past `limit` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def write(self, data) -> int:  # type: ignore[override]
        if self.tell() + len(data) > self.limit:
            raise ChannelError(
                f"the guest command's output exceeded {self.limit} bytes",
                hint="aq collects only small outputs here; the guest may be hostile",
            )
        return super().write(data)
