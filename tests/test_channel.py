"""The command channel's host side against a scripted stand-in for the guest agent.

The real agent is exercised end to end in tests/test_e2e_guest.py; these tests pin down
protocol corner cases that a real guest hits only by timing.
"""

from __future__ import annotations

import io
import itertools
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from aq.errors import OutputClosed, OutputFailed
from aq.guest import channel, wire
from aq.paths import VmFiles, short_socket_path


class FakeGuest:
    """Listens on every slot's sockets as QEMU does; `script` plays the agent."""

    def __init__(self, root: Path, script: Callable[[dict[str, socket.socket]], None]) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.files = VmFiles(root)
        self.listeners: dict[tuple[int, str], socket.socket] = {}
        for number in range(channel.SLOTS):
            for stream in channel.STREAMS:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.bind(short_socket_path(self.files.exec_socket(number, stream)))
                sock.listen(1)
                self.listeners[number, stream] = sock
        self.script = script
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        ready: dict[int, dict[str, socket.socket]] = {}
        try:
            # The host takes the first free slot from its pid; wait on all of them.
            conns: dict[str, socket.socket] = {}
            sel = selectors.DefaultSelector()
            for key, sock in self.listeners.items():
                sel.register(sock, selectors.EVENT_READ, key)
            while len(conns) < len(channel.STREAMS):
                for key, _ in sel.select(10):
                    number, stream = key.data
                    conn, _ = key.fileobj.accept()
                    ready.setdefault(number, {})[stream] = conn
                    if len(ready[number]) == len(channel.STREAMS):
                        conns = ready[number]
            sel.close()
            self.script(conns)
        except BaseException as err:  # reported by the test
            self.error = err

    def close(self) -> None:
        self.thread.join(10)
        for sock in self.listeners.values():
            sock.close()
        if self.error:
            raise self.error


def _read_line(sock: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        byte = sock.recv(1)
        assert byte, "host closed the control socket"
        line += byte
    return line.rstrip(b"\n")


def _accept_session(conns: dict[str, socket.socket], start: bytes, stale: bytes = b"") -> bytes:
    """Answer the host's `start` line as the agent does; return the command line."""
    ctl = conns["ctl"]
    nonce = start.split()[1]
    conns["out"].sendall(stale + b"AQ" + nonce + b"\n")
    conns["err"].sendall(b"AQ" + nonce + b"\n")
    ctl.sendall(b"S " + nonce + b"\n")
    line = _read_line(ctl)
    while line.startswith(b"S "):  # repeats sent before our answer arrived
        line = _read_line(ctl)
    kind, size = line.split()
    assert kind == b"X"
    command = _recv_exactly(ctl, int(size))
    assert b"\n" not in command  # the agent reads it with `read`: one line
    assert _recv_exactly(ctl, 1) == b"\n"
    return command


def _agent_that_misses_the_first_start(conns: dict[str, socket.socket]) -> None:
    ctl = conns["ctl"]
    first = _read_line(ctl)
    assert first.startswith(b"S ")  # lost, as when it lands on a closing port
    again = _read_line(ctl)
    assert again == first, "the host must repeat the same start"
    command = _accept_session(conns, first, stale=b"stale bytes from an earlier session ")
    assert command == b"echo 'a b'"
    assert _read_line(ctl) == b"E"
    conns["out"].sendall(b"a b\n")
    ctl.sendall(b"R 0 4 0\n")


def test_a_lost_session_start_is_repeated(aq_home: Path) -> None:
    guest = FakeGuest(aq_home / "vm", _agent_that_misses_the_first_start)
    out, err = io.BytesIO(), io.BytesIO()
    status = channel.run(
        guest.files, ["echo", "a b"], channel.ExecOptions(None, out, err, timeout=30)
    )
    guest.close()
    assert (status, out.getvalue(), err.getvalue()) == (0, b"a b\n", b"")


def test_an_agent_that_never_answers_is_a_timeout(aq_home: Path, monkeypatch) -> None:
    monkeypatch.setattr(channel, "START_WAIT", 1.5)
    held = threading.Event()

    def silent(conns: dict[str, socket.socket]) -> None:
        held.wait(10)

    guest = FakeGuest(aq_home / "vm", silent)
    with pytest.raises(channel.GuestTimeout, match="did not answer"):
        channel.run(guest.files, ["true"], channel.ExecOptions(None, io.BytesIO(), io.BytesIO()))
    held.set()
    guest.close()


def test_a_timeout_before_the_agent_answers_is_a_guest_timeout(aq_home: Path) -> None:
    # Not "interrupted": the command's --timeout ran out before anything started.
    held = threading.Event()
    guest = FakeGuest(aq_home / "vm", lambda conns: held.wait(10))
    with pytest.raises(channel.GuestTimeout, match="did not answer within 1s"):
        channel.run(guest.files, ["true"], channel.ExecOptions(None, io.BytesIO(), io.BytesIO(), 1))
    held.set()
    guest.close()


def test_a_signal_before_the_guest_answers_stops_at_once(aq_home: Path) -> None:
    held = threading.Event()
    guest = FakeGuest(aq_home / "vm", lambda conns: held.wait(10))
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        channel.run(guest.files, ["true"], channel.ExecOptions(None, io.BytesIO(), io.BytesIO()))
    assert time.monotonic() - started < 5
    held.set()
    guest.close()


def test_stdin_from_a_pipe_goes_in_large_frames(aq_home: Path) -> None:
    """A writer that hands a pipe 10 KiB at a time (as tarfile does) still yields frames
    of up to FRAME_MAX: every frame costs the guest a process."""
    total = 8 << 20
    frames: list[int] = []

    def agent(conns: dict[str, socket.socket]) -> None:
        ctl = conns["ctl"]
        _accept_session(conns, _read_line(ctl))
        while (line := _read_line(ctl)) != b"E":
            kind, size = line.split()
            assert kind == b"D"
            frames.append(len(_recv_exactly(ctl, int(size))))
        ctl.sendall(b"R 0 0 0\n")

    guest = FakeGuest(aq_home / "vm", agent)
    read_fd, write_fd = os.pipe()

    def write() -> None:
        with os.fdopen(write_fd, "wb", buffering=0) as pipe:
            for _ in range(total // 10240):
                pipe.write(b"x" * 10240)
            pipe.write(b"x" * (total % 10240))

    writer = threading.Thread(target=write)
    writer.start()
    with os.fdopen(read_fd, "rb") as stdin:
        options = channel.ExecOptions(stdin, io.BytesIO(), io.BytesIO(), timeout=60)
        assert channel.run(guest.files, ["cat"], options) == 0
    writer.join()
    guest.close()
    assert sum(frames) == total
    assert len(frames) <= 4 * total // channel.FRAME_MAX, frames[:20]


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "host closed the control socket"
        data += chunk
    return data


ARGS = [
    "a b",
    "it's",
    '"q"',
    "$HOME",
    "`id`",
    "new\nline",
    "two\n\nlines\\n",
    "ünïcødé ☃",
    "",
    "*",
    "\\",
]


def test_the_command_line_is_one_line_whose_words_are_argv() -> None:
    # The agent reads it with `read` and hands it to `sh -c`; bash reads $'...' as
    # busybox ash does, so it stands in here (the e2e tests use the real guest).
    import shutil
    import subprocess

    from aq.guest.wire import command_line

    line = command_line(["printf", "[%s]", *ARGS])
    assert b"\n" not in line
    bash = shutil.which("bash")
    assert bash is not None
    out = subprocess.run([bash, "-c", line], capture_output=True, check=True).stdout
    assert out.decode() == "".join(f"[{a}]" for a in ARGS)


def test_slots_plugged_in_just_now_are_tried_last(tmp_path: Path, monkeypatch) -> None:
    # Once a VM is ready, aq plugs slots 1-7 in and the agent arms them all at once: a
    # first exec right after `aq start` goes to a slot it armed earlier if one is free.
    files = VmFiles(tmp_path)
    old = time.time() - 60
    for number in (0, 1, 2, 5):
        path = files.exec_socket(number, "ctl")
        path.touch()
        if number in (0, 5):
            os.utime(path, (old, old))
    monkeypatch.setattr(os, "getpid", lambda: 2)  # the spread starts at slot 2
    monkeypatch.setattr(channel, "_held_before", itertools.count())
    assert channel._plugged(files) == [5, 0, 2, 1]
    # The same process's next session starts one further on: not the slot the agent
    # may still be re-arming after the last one.
    assert channel._plugged(files) == [5, 0, 1, 2]


def test_a_ping_the_agent_dropped_is_sent_again(aq_home: Path) -> None:
    # Between two sessions the agent reopens the slot's port, and what reached it just
    # then is dropped: a ping says its line again each second until it is answered.
    from tests.control_stub import control_socket

    files, heard = control_socket(aq_home / "vm", answer=1)
    assert channel.ping(files, timeout=10)
    assert len(heard) == 2 and heard[0] == heard[1] and heard[0].startswith("P ")


def test_a_reader_gone_on_the_host_is_not_a_channel_failure(tmp_path: Path) -> None:
    # `aq exec VM -- CMD | head -1`: the command's bytes cannot be written any more;
    # `> /dev/full`: they cannot be written at all, which is one error line.
    class Closed(io.BytesIO):
        def write(self, data) -> int:  # type: ignore[override]
            raise BrokenPipeError(32, "Broken pipe")

    class Full(io.BytesIO):
        def write(self, data) -> int:  # type: ignore[override]
            raise OSError(28, "No space left on device")

    for sink, expected in ((Closed(), OutputClosed), (Full(), OutputFailed)):
        guest, host = socket.socketpair()
        with guest, host:
            stream = wire.Stream(host, sink, b"AQ1\n")
            guest.sendall(b"AQ1\nsome output\n")
            with pytest.raises(expected):
                stream.on_readable()
    # The CLI then ends as `cat` would: by SIGPIPE, with nothing on stderr.
    ended = subprocess.run(
        [sys.executable, "-c", "from aq.cli.report import reader_gone; reader_gone()"],
        capture_output=True,
    )
    assert (ended.returncode, ended.stderr) == (-signal.SIGPIPE, b"")
