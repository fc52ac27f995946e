"""Serving a VM's console to a telnet client on 127.0.0.1, with no socat needed.

The bridge tells the client the server echoes and suppresses go-ahead (character mode),
removes telnet commands from what the client sends, and doubles 0xFF bytes (IAC) in
what the guest prints. One client at a time; it runs until interrupted.

Any local user can connect to 127.0.0.1, and the console is usually a root shell, so
only the VM's owner gets it: on Linux the client's uid is read from /proc/net/tcp
(aq.console.peer); where it cannot be told, the client must first type the one-time
token aq printed when it started serving. Anyone else gets one line and is closed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time
from collections.abc import Callable

from aq.console import peer
from aq.console.attach import DETACH, connect, console_lock, pump
from aq.errors import Conflict
from aq.paths import VmFiles

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
ECHO, SGA = 1, 3
NEGOTIATION = bytes([IAC, WILL, ECHO, IAC, WILL, SGA, IAC, DO, SGA])


class TelnetDecoder:
    """Strips telnet commands from a client's byte stream (a small state machine)."""

    def __init__(self) -> None:
        self.state = "data"
        self.last_cr = False

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            if self.state == "data":
                if byte == IAC:
                    self.state = "iac"
                elif self.last_cr and byte in (0, 10):
                    pass  # CR NUL / CR LF from the client: the CR already went through
                else:
                    out.append(byte)
                self.last_cr = byte == 13
            elif self.state == "iac":
                if byte == IAC:
                    out.append(IAC)
                    self.state = "data"
                elif byte in (DO, DONT, WILL, WONT):
                    self.state = "option"
                elif byte == SB:
                    self.state = "sub"
                else:
                    self.state = "data"
            elif self.state == "option":
                self.state = "data"
            elif self.state == "sub":
                if byte == IAC:
                    self.state = "sub-iac"
            elif self.state == "sub-iac":
                self.state = "data" if byte == SE else "sub"
        return bytes(out)


def escape(data: bytes) -> bytes:
    return data.replace(b"\xff", b"\xff\xff")


def listen(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:port (0: a free port the OS picks, so no clash)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind(("127.0.0.1", port))
    except OSError as err:
        server.close()
        raise Conflict(
            f"cannot serve the console on 127.0.0.1:{port}: {err.strerror}",
            hint="choose another port, or leave it out and aq picks a free one",
        ) from None
    server.listen(1)
    return server


TOKEN_WAIT = 30.0  # seconds a client has to type the token
TOKEN_LIMIT = 256  # bytes read at most while waiting for it
TOKEN_PROMPT = b"aq: type the console token aq printed, then Enter: "
NOT_YOURS = b"aq: this console belongs to another user\r\n"
WRONG_TOKEN = b"aq: wrong or missing token\r\n"
REFUSE_DRAIN = 1.0  # seconds spent reading a refused client's leftovers before closing


def read_token(client: socket.socket, wait: float) -> bytes | None:
    """The client's first line with telnet commands removed, or None if it sends none
    (closes, goes past TOKEN_LIMIT bytes, or is silent for `wait` seconds)."""
    decoder = TelnetDecoder()
    deadline = time.monotonic() + wait
    line, received = b"", 0
    while received < TOKEN_LIMIT:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        client.settimeout(left)
        try:
            data = client.recv(TOKEN_LIMIT - received)
        except (TimeoutError, OSError):
            return None
        if not data:
            return None
        received += len(data)
        line += decoder.feed(data)
        ends = line.replace(b"\n", b"\r")
        if b"\r" in ends:
            return ends.split(b"\r")[0]
    return None


def admit(client: socket.socket, token: str) -> bool:
    """Whether `client` may have the console: our own uid, else the right token.
    A refused client is told why in one line."""
    uid = peer.peer_uid(client)
    if uid is not None:
        if uid == os.getuid():
            return True
        _refuse(client, NOT_YOURS)
        return False
    client.sendall(TOKEN_PROMPT)
    typed = read_token(client, TOKEN_WAIT)
    client.settimeout(None)
    if typed is not None and secrets.compare_digest(typed.strip(), token.encode()):
        return True
    _refuse(client, WRONG_TOKEN)
    return False


def _refuse(client: socket.socket, line: bytes) -> None:
    """Send `line` and end the connection so that the line arrives: closing with unread
    input would reset the connection and could drop it, so read a little first."""
    client.sendall(line)
    client.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + REFUSE_DRAIN
    with contextlib.suppress(OSError):
        while (left := deadline - time.monotonic()) > 0:
            client.settimeout(left)
            if not client.recv(65536):
                break


def serve(
    files: VmFiles,
    name: str,
    server: socket.socket,
    on_ready: Callable[[int, str], None],
) -> None:
    """Serve the console to one admitted telnet client after another, until interrupted.

    `on_ready` gets the port and the token a client must type when aq cannot tell
    whether it is the owner."""
    token = secrets.token_urlsafe(8)
    with console_lock(files, name):
        on_ready(server.getsockname()[1], token)
        while True:
            client, _ = server.accept()
            with client:
                try:
                    allowed = admit(client, token)
                except OSError:
                    allowed = False
                if allowed:
                    _bridge(files, client)


def _bridge(files: VmFiles, client: socket.socket) -> None:
    console = connect(files)
    with console:
        client.sendall(NEGOTIATION)
        console.sendall(b"\r")
        decoder = TelnetDecoder()

        def from_client(data: bytes) -> tuple[bytes, bool]:
            text = decoder.feed(data)
            index = text.find(DETACH)
            if index >= 0:
                return text[:index], True
            return text, False

        with contextlib.suppress(OSError):
            pump(console, client.fileno(), lambda d: client.sendall(escape(d)), from_client)
