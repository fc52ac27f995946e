"""Issue 9, end to end: `aq console --telnet` on a real VM refuses another local user
and keeps serving its owner."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest

from aq.console import telnet

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]


def _read(client: socket.socket, needle: bytes, timeout: float) -> tuple[bytes, bool]:
    """Read until `needle`, EOF or `timeout`; return what arrived and whether it closed."""
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen and (left := deadline - time.monotonic()) > 0:
        client.settimeout(left)
        try:
            chunk = client.recv(4096)
        except TimeoutError:
            break
        if not chunk:
            return seen, True
        seen += chunk
    return seen, False


def _connect_as_nobody(port: int) -> bytes:
    """What a uid-65534 client receives before the server closes it (forked child)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
                seen, closed = _read(client, b"login:", 30)
            os.write(write_fd, seen + (b"\nCLOSED" if closed else b"\nOPEN"))
            status = 0
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        report = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return report


def test_telnet_console_refuses_another_user(installed, shared_vm) -> None:
    server = installed.popen(
        "console", shared_vm, "--telnet", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        port = int(server.stdout.readline().split()[-1])
        assert _connect_as_nobody(port) == telnet.NOT_YOURS + b"\nCLOSED"
        with socket.create_connection(("127.0.0.1", port), timeout=60) as client:
            assert client.recv(9)[:3] == bytes([255, 251, 1])  # the owner: IAC WILL ECHO
            client.sendall(b"\r\n")
            seen, _ = _read(client, b"login:", 60)
            assert b"login:" in seen
    finally:
        server.send_signal(signal.SIGINT)
        try:
            _, err = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()  # a server left running would hold the console for later tests
            server.communicate(timeout=10)
            raise
    assert "if the client is asked for a token, type: " in err
