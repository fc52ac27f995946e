"""`aq console --telnet` serves the console to the VM's owner only (issue 9).

A fake console (a unix socket that greets every client with CONSOLE-BYTES) stands in
for QEMU; telnet.serve runs in a thread. Tests run as root, so a forked child that
drops to uid 65534 plays the other local user.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from aq.console import peer, telnet
from aq.paths import VmFiles, short_socket_path

GREETING = b"CONSOLE-BYTES"
NOBODY = 65534


class FakeConsole:
    """Listens where QEMU's console socket would; counts who it greeted."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.files = VmFiles(root)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(short_socket_path(self.files.console))
        self.sock.listen(4)
        self.greeted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.greeted += 1
                conn.sendall(GREETING)
                while conn.recv(4096):
                    pass


class Served:
    """telnet.serve in a thread over a FakeConsole; the port and token it announced."""

    def __init__(self, root: Path) -> None:
        self.console = FakeConsole(root)
        self.server = telnet.listen(0)
        announced = threading.Event()

        def ready(port: int, token: str) -> None:
            self.port, self.token = port, token
            announced.set()

        def serve() -> None:
            with contextlib.suppress(OSError):  # close() shuts the listening socket
                telnet.serve(self.console.files, "vm", self.server, ready)

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        assert announced.wait(10)

    def close(self) -> None:
        self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        self.console.sock.shutdown(socket.SHUT_RDWR)
        self.console.sock.close()
        self.thread.join(5)


@pytest.fixture
def served(aq_home: Path):
    serving = Served(aq_home / "vm")
    yield serving
    serving.close()


def talk(port: int, send: bytes = b"", wait: float = 5.0) -> tuple[bytes, bool]:
    """Connect, send, read until the console greets us or the server closes; return
    what arrived and whether the server closed the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as client:
        if send:
            client.sendall(send)
        received = b""
        deadline = time.monotonic() + wait
        while GREETING not in received and time.monotonic() < deadline:
            try:
                data = client.recv(4096)
            except TimeoutError:
                break
            if not data:
                return received, True
            received += data
        return received, False


def test_the_owner_gets_the_console(served: Served) -> None:
    received, _ = talk(served.port)
    assert GREETING in received
    assert telnet.TOKEN_PROMPT not in received


def _as_nobody(port: int, write_fd: int) -> None:
    """In a forked child: become uid 65534, connect, report what arrived on the pipe."""
    status = 1
    try:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        received, closed = talk(port)
        os.write(write_fd, received + (b"\nCLOSED" if closed else b"\nOPEN"))
        status = 0
    finally:
        os._exit(status)


def test_another_user_is_refused_and_the_owner_still_served(served: Served) -> None:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _as_nobody(served.port, write_fd)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        report = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    received, _, closed = report.rpartition(b"\n")
    assert received == telnet.NOT_YOURS
    assert closed == b"CLOSED"
    assert served.console.greeted == 0  # the console was never even opened for it
    assert GREETING in talk(served.port)[0]


@pytest.fixture
def unknown_uid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peer, "peer_uid", lambda client: None)
    monkeypatch.setattr(telnet, "TOKEN_WAIT", 1.0)


def test_the_right_token_opens_the_console(unknown_uid, served: Served) -> None:
    received, _ = talk(served.port, served.token.encode() + b"\r\n")
    assert received.startswith(telnet.TOKEN_PROMPT)
    assert GREETING in received


def test_telnet_commands_around_the_token_are_ignored(unknown_uid, served: Served) -> None:
    noise = bytes([telnet.IAC, telnet.DO, telnet.ECHO])
    received, _ = talk(served.port, noise + served.token.encode() + noise + b"\r\0")
    assert GREETING in received


@pytest.mark.parametrize(
    "send",
    [
        b"wrong-token\r\n",
        b"",  # silent until the deadline
        b"x" * 300,  # no line within the byte limit
    ],
    ids=["wrong", "silent", "too-long"],
)
def test_a_wrong_or_missing_token_is_refused(unknown_uid, served: Served, send) -> None:
    received, closed = talk(served.port, send)
    assert received == telnet.TOKEN_PROMPT + telnet.WRONG_TOKEN
    assert closed
    assert served.console.greeted == 0
    right = talk(served.port, served.token.encode() + b"\n")[0]
    assert GREETING in right  # aq keeps serving


def test_the_token_is_a_prefix_of_nothing(unknown_uid, served: Served) -> None:
    received, closed = talk(served.port, served.token[:-1].encode() + b"\r\n")
    assert closed and GREETING not in received


def test_peer_uid_of_a_real_loopback_connection() -> None:
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        client = stack.enter_context(socket.create_connection(server.getsockname()))
        accepted = stack.enter_context(server.accept()[0])
        assert peer.peer_uid(accepted) == os.getuid()
        assert peer.peer_uid(client) == os.getuid()  # the accepted side's owner


HEADER = (
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
    "   uid  timeout inode\n"
)
# 127.0.0.1:40845 (client, uid 1000) <-> 127.0.0.1:10023 (aq), little-endian words.
TCP = HEADER + (
    "   0: 0100007F:2727 00000000:0000 0A 00000000:00000000 00:00000000 00000000"
    "     0        0 56382 1 00000000d474dbd5 100 0 0 10 0\n"
    "   1: 0100007F:2727 0100007F:9F8D 01 00000000:00000000 00:00000000 00000000"
    "     0        0 56390 1 00000000a1b2c3d4 20 4 30 10 -1\n"
    "   2: 0100007F:9F8D 0100007F:2727 01 00000000:00000000 00:00000000 00000000"
    "  1000        0 56389 1 00000000e5f6a7b8 20 4 30 10 -1\n"
)
TIME_WAIT_ROW = (
    "   3: 0100007F:9F8D 0100007F:2727 06 00000000:00000000 03:00001770 00000000"
    "     0        0 0 3 0000000000000000\n"
)
TCP6 = HEADER + (
    "   0: 0000000000000000FFFF00000100007F:9F8D 0000000000000000FFFF00000100007F:2727 01"
    " 00000000:00000000 00:00000000 00000000  1001        0 77 1 0000000000000000 20 4 30 10 -1\n"
    "   1: 00000000000000000000000001000000:A000 00000000000000000000000001000000:0016 01"
    " 00000000:00000000 00:00000000 00000000  1002        0 78 1 0000000000000000 20 4 30 10 -1\n"
)
BIG_ENDIAN = HEADER + (
    "   0: 7F000001:9F8D 7F000001:2727 01 00000000:00000000 00:00000000 00000000"
    "  1003        0 56389 1 00000000e5f6a7b8 20 4 30 10 -1\n"
)


def _a(host: str, port: int) -> peer.Address:
    return peer.normalize(host, port)


@pytest.mark.parametrize(
    ("table", "local", "remote", "byteorder", "uid"),
    [
        (TCP, _a("127.0.0.1", 40845), _a("127.0.0.1", 10023), "little", 1000),
        (TCP, _a("127.0.0.1", 10023), _a("127.0.0.1", 40845), "little", 0),  # aq's side
        (TCP, _a("127.0.0.1", 40846), _a("127.0.0.1", 10023), "little", None),
        (TCP, _a("127.0.0.1", 40845), _a("127.0.0.1", 10023), "big", None),
        (TCP + TIME_WAIT_ROW, _a("127.0.0.1", 40845), _a("127.0.0.1", 10023), "little", 1000),
        (HEADER + TIME_WAIT_ROW, _a("127.0.0.1", 40845), _a("127.0.0.1", 10023), "little", None),
        (TCP6, _a("127.0.0.1", 40845), _a("127.0.0.1", 10023), "little", 1001),
        (TCP6, _a("::ffff:127.0.0.1", 40845), _a("127.0.0.1", 10023), "little", 1001),
        (TCP6, _a("::1", 40960), _a("::1", 22), "little", 1002),
        (BIG_ENDIAN, _a("127.0.0.1", 40845), _a("127.0.0.1", 10023), "big", 1003),
        (TCP + TCP6.replace("1001", "1000"), _a("127.0.0.1", 40845), None, "little", None),
        ("", _a("127.0.0.1", 40845), _a("127.0.0.1", 10023), "little", None),
        (
            HEADER + "   0: garbage\n   1: XYZ:1 0:0 01 a b c 5\n",
            _a("127.0.0.1", 1),
            None,
            "little",
            None,
        ),
    ],
)
def test_find_uid(table, local, remote, byteorder, uid) -> None:
    assert peer.find_uid(table, local, remote, byteorder) == uid


def test_two_owners_for_one_connection_is_unknown() -> None:
    doubled = TCP + TCP.splitlines(keepends=True)[3].replace("  1000 ", "  2000 ")
    assert peer.find_uid(doubled, _a("127.0.0.1", 40845), _a("127.0.0.1", 10023), "little") is None


@pytest.mark.parametrize(
    ("text", "byteorder", "expected"),
    [
        ("0100007F:2727", "little", ("127.0.0.1", 10023)),
        ("7F000001:2727", "big", ("127.0.0.1", 10023)),
        ("00000000000000000000000001000000:0016", "little", ("::1", 22)),
        ("0000000000000000FFFF00000100007F:0016", "little", ("127.0.0.1", 22)),
        ("B80D0120000000000000000001000000:0050", "little", ("2001:db8::1", 80)),
    ],
)
def test_decode_address(text, byteorder, expected) -> None:
    assert peer.decode_address(text, byteorder) == _a(*expected)
