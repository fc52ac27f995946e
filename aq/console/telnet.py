"""Serving a VM's console to a telnet client on 127.0.0.1, with no socat needed.

The bridge tells the client the server echoes and suppresses go-ahead (character mode),
removes telnet commands from what the client sends, and doubles 0xFF bytes (IAC) in
what the guest prints. One client at a time; it runs until interrupted.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable

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


def serve(
    files: VmFiles, name: str, server: socket.socket, on_ready: Callable[[int], None]
) -> None:
    """Serve the console to one telnet client after another, until interrupted."""
    with console_lock(files, name):
        on_ready(server.getsockname()[1])
        while True:
            client, _ = server.accept()
            with client:
                console = connect(files)
                with console:
                    client.sendall(NEGOTIATION)
                    console.sendall(b"\r")
                    decoder = TelnetDecoder()

                    def from_client(data: bytes, decoder=decoder) -> tuple[bytes, bool]:
                        text = decoder.feed(data)
                        index = text.find(DETACH)
                        if index >= 0:
                            return text[:index], True
                        return text, False

                    with contextlib.suppress(OSError):
                        pump(
                            console,
                            client.fileno(),
                            lambda d, c=client: c.sendall(escape(d)),
                            from_client,
                        )
