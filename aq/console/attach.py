"""Attaching a person to a VM's serial console: a raw terminal, or a telnet bridge.

QEMU's console socket takes one client at a time, so aq holds a lock while attached and
tells a second attacher who has it. The terminal is restored on every way out. The
detach key is Ctrl-] (as in telnet).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import socket
import sys
import termios
import tty
from collections.abc import Callable, Iterator

from aq.errors import Conflict
from aq.paths import VmFiles, short_socket_path

DETACH = b"\x1d"  # Ctrl-]
DETACH_NAME = "Ctrl-]"


@contextlib.contextmanager
def console_lock(files: VmFiles, name: str) -> Iterator[None]:
    """Hold the VM's console for this process, or say who holds it."""
    fd = os.open(files.console_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            raise Conflict(
                f"the console of '{name}' is in use by pid {holder}",
                hint="detach that console first (Ctrl-])",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def connect(files: VmFiles) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(short_socket_path(files.console))
    except OSError as err:
        sock.close()
        from aq.errors import AqError

        raise AqError(
            f"cannot reach the VM's console: {err.strerror or err}",
            hint="is the VM running? `aq status NAME`",
        ) from None
    return sock


def pump(
    sock: socket.socket,
    read_fd: int,
    write: Callable[[bytes], None],
    transform_in: Callable[[bytes], tuple[bytes, bool]],
) -> str:
    """Copy between the console socket and a user until detach or either side closes.

    `transform_in` turns the user's bytes into bytes for the guest and says whether
    the user asked to detach.
    """
    while True:
        ready, _, _ = select.select([sock, read_fd], [], [])
        if sock in ready:
            data = sock.recv(65536)
            if not data:
                return "the console closed (the VM stopped)"
            write(data)
        if read_fd in ready:
            data = os.read(read_fd, 65536)
            if not data:
                return "input closed"
            data, detach = transform_in(data)
            if data:
                sock.sendall(data)
            if detach:
                return "detached"


def _split_detach(data: bytes) -> tuple[bytes, bool]:
    index = data.find(DETACH)
    if index < 0:
        return data, False
    return data[:index], True


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """Put the terminal in raw mode; restore it on every exit, signals included."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)

    def restore(*_args: object) -> None:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}

    def on_signal(signum, _frame) -> None:
        restore()
        raise SystemExit(128 + signum)

    for sig in previous:
        signal.signal(sig, on_signal)
    try:
        tty.setraw(fd)
        yield
    finally:
        restore()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def attach(files: VmFiles, name: str) -> str:
    """Bridge this terminal to the console until Ctrl-]; return why it ended."""
    with console_lock(files, name):
        sock = connect(files)
        out = sys.stdout.buffer
        print(
            f"Connected to the console of '{name}'. Detach with {DETACH_NAME}.",
            file=sys.stderr,
            flush=True,
        )

        def write(data: bytes) -> None:
            out.write(data)
            out.flush()

        try:
            with raw_terminal(sys.stdin.fileno()):
                sock.sendall(b"\r")
                reason = pump(sock, sys.stdin.fileno(), write, _split_detach)
        finally:
            sock.close()
        print(f"\r\n[aq: {reason}]", file=sys.stderr, flush=True)
        return reason
