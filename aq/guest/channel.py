"""The host side of the command channel that `aq exec` and `aq cp` use.

The guest runs aq/guest/agent.sh. A VM has SLOTS independent slots, each three
virtio-serial ports that QEMU exposes as unix sockets in the VM's folder:

  ctl  both ways; line-framed control messages and stdin frames
  out  guest -> host; the command's stdout, raw bytes
  err  guest -> host; the command's stderr, raw bytes

One `aq exec` holds one slot (a file lock), so concurrent execs never share a stream.
A session, host first:

  host -> ctl  "S <nonce>"          start; the agent writes "AQ<nonce>\\n" on out and err
  agent -> ctl "S <nonce>"          (anything on a stream before its marker is stale)
  host -> ctl  "X <n>" + n bytes    the command line, shell-quoted, no newline in it
               + "\n"                 (short ones are read by the shell's `read`)
  host -> ctl  "D <n>" + n bytes    stdin data, any number of times
  host -> ctl  "E"                  stdin EOF
  host -> ctl  "K <SIGNAL>"         signal the command's process group (Ctrl-C: INT)
  agent -> ctl "R <status> <o> <e>" exit status and the byte counts sent on out/err
  agent -> ctl "F <reason>"         the command could not be started (no work folder...)

and "P <nonce>" is answered with "P <nonce>" (readiness). Stdout and stderr stay raw,
so output is binary-safe and streams as it comes; the counts tell the host when both
streams are complete. If the host goes away, the agent kills the command.

The guest is not trusted: what it sends is parsed and bounded by aq.guest.wire, so a
hostile guest cannot make aq grow without bound; its reasons are made safe to print.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import select
import selectors
import signal
import socket
import stat
import time
from collections import namedtuple
from collections.abc import Iterator, Sequence
from pathlib import Path

from aq.errors import Conflict, GuestTimeout
from aq.guest.wire import (
    CAPTURE_MAX,
    CHUNK,
    AgentFailed,
    BinaryStream,
    Bounded,
    ChannelError,
    LineReader,
    Stream,
    command_line,
)
from aq.paths import EXEC_STREAMS, VmFiles, short_socket_path
from aq.safetext import for_terminal

SLOTS = 8
STREAMS = EXEC_STREAMS  # one home: aq.paths names the sockets
FRAME_MAX = 1 << 20  # stdin bytes per frame: each frame costs the guest one dd process
GATHER = 0.01  # seconds to wait for more stdin before a frame goes out
TIMEOUT_EXIT = 124  # as timeout(1) does
START_REPEAT = 1.0  # seconds between repeats of an unanswered session start
START_WAIT = 120.0  # seconds before an unanswered session start is an error
ARMING = 3.0  # seconds a newly plugged slot may still be arming in the guest


class Slot(namedtuple("Slot", "number lock_fd ctl out err")):  # see aq.paths.VmFiles
    """A held slot: its number, the lock's file descriptor and its three sockets."""

    __slots__ = ()

    def close(self) -> None:
        for sock in (self.ctl, self.out, self.err):
            sock.close()
        os.close(self.lock_fd)


def _connect(path: Path, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(short_socket_path(path))
    except OSError as err:
        sock.close()
        raise ChannelError(
            f"cannot reach the VM's command channel ({path.name}): {err.strerror or err}",
            hint="is the VM running? `aq status NAME`",
        ) from None
    sock.settimeout(None)
    return sock


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def slot(files: VmFiles, wait: float = 60.0) -> Iterator[Slot]:
    """Hold a free slot (waiting up to `wait` seconds for one) and connect its streams."""
    deadline = time.monotonic() + wait
    while True:
        plugged = _plugged(files)
        if not plugged:  # none plugged in (aq.readiness): the VM is not up
            _connect(files.exec_socket(0, "ctl"), 1).close()  # says why, one line
        for number in plugged:
            fd = _try_lock(files.exec_lock(number))
            if fd is not None:
                break
        else:
            if time.monotonic() > deadline:
                raise Conflict(
                    f"all {SLOTS} command channels of this VM stayed busy for {wait:.0f}s",
                    hint="wait for other `aq exec` commands to finish",
                )
            time.sleep(0.05)
            continue
        break
    socks: list[socket.socket] = []
    try:
        for stream in STREAMS:
            socks.append(_connect(files.exec_socket(number, stream), 10))
    except BaseException:
        for sock in socks:
            sock.close()
        os.close(fd)
        raise
    held = Slot(number, fd, *socks)
    try:
        yield held
    finally:
        held.close()


_held_before = itertools.count()  # slots this process has asked for: see _plugged


def _plugged(files: VmFiles) -> list[int]:
    """The plugged-in slots, in the order to try them: spread by pid and by how many
    this process asked for before, so that execs in a row (several aq commands, or
    several sessions of one, like a kernel copy's refresh) use different slots while
    the agent re-arms the last one: a start that reaches a slot while it re-arms is
    dropped there and sent again only after START_REPEAT (1 s). Slots plugged in the
    last ARMING seconds (once the VM got ready) come last, as the agent is likely
    still arming them (under TCG, about 0.2 s of guest time each, all at once)."""
    first = (os.getpid() + next(_held_before)) % SLOTS
    now = time.time()
    found = []
    for offset in range(SLOTS):
        number = (first + offset) % SLOTS
        try:
            plugged_at = files.exec_socket(number, "ctl").stat().st_mtime
        except OSError:
            continue  # not plugged in yet
        found.append((now - plugged_at < ARMING, offset, number))
    return [number for *_, number in sorted(found)]


def ping(files: VmFiles, timeout: float = 5.0, slot_number: int = 0) -> bool:
    """Whether the agent answers on a slot's control socket within `timeout`."""
    nonce = os.urandom(8).hex()  # secrets.token_hex, without hmac's imports
    return _echoed(files, f"P {nonce}", timeout, slot_number)


def set_clock(files: VmFiles, epoch: int, timeout: float = 5.0, slot_number: int = 0) -> bool:
    """Set the guest's clock to `epoch` (UTC seconds) with the agent's `T` line, much
    cheaper than an exec; False when the agent did not answer (one older than `T`)."""
    return _echoed(files, f"T {int(epoch)}", timeout, slot_number)


def _echoed(files: VmFiles, line: str, timeout: float, slot_number: int) -> bool:
    """Send a control line on a slot's control socket; whether the agent echoes it."""
    try:
        sock = _connect(files.exec_socket(slot_number, "ctl"), timeout)
    except ChannelError:
        return False
    reader = LineReader(sock)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            # Repeated each START_REPEAT: the agent drops what reaches a slot while it
            # closes the last session (what that host left unread goes with it).
            sock.sendall(f"{line}\n".encode())
            resend = min(deadline, time.monotonic() + START_REPEAT)
            while time.monotonic() < resend:
                sock.settimeout(max(0.01, resend - time.monotonic()))
                try:
                    if not reader.feed():
                        return False
                except TimeoutError:
                    break
                if line in reader.lines():
                    return True
        return False
    except (OSError, ChannelError):
        return False
    finally:
        sock.close()


def _never_blocks(stream: BinaryStream) -> bool:
    """Regular files and devices such as /dev/null: always readable, and epoll refuses them."""
    mode = os.fstat(stream.fileno()).st_mode
    return stat.S_ISREG(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode)


class ExecOptions(namedtuple("ExecOptions", "stdin stdout stderr timeout", defaults=(None,))):
    """Where a command's stdin comes from (None: EOF at once) and its stdout and stderr
    go (binary streams), and the seconds before it is killed (None: never)."""

    __slots__ = ()


class _Session:
    """One exec over one slot, driven by a selector loop in this thread."""

    def __init__(self, held: Slot, options: ExecOptions) -> None:
        self.held = held
        self.options = options
        self.nonce = os.urandom(8).hex()  # secrets.token_hex, without hmac's imports
        marker = f"AQ{self.nonce}\n".encode()
        self.out = Stream(held.out, options.stdout, marker)
        self.err = Stream(held.err, options.stderr, marker)
        self.ctl = LineReader(held.ctl)
        self.outgoing = b""
        self.started = False
        self.status: int | None = None
        self.stdin_open = options.stdin is not None
        self.signals: list[str] = []
        self.selector = selectors.DefaultSelector()

    def send(self, data: bytes) -> None:
        self.outgoing += data

    def _flush(self) -> None:
        try:
            sent = self.held.ctl.send(self.outgoing[: CHUNK * 4])
        except BlockingIOError:
            return
        self.outgoing = self.outgoing[sent:]

    def _on_ctl(self, argv_line: bytes) -> None:
        if not self.ctl.feed():
            raise ChannelError(
                "the command channel closed before the command finished",
                hint="the VM may have stopped; `aq status NAME`",
            )
        for line in self.ctl.lines():
            kind, _, rest = line.partition(" ")
            if kind == "S" and rest == self.nonce and not self.started:
                self.started = True
                self.send(b"X %d\n" % len(argv_line) + argv_line + b"\n")
                if not self.stdin_open:
                    self.send(b"E\n")
            elif kind == "F" and self.started:
                raise AgentFailed(
                    f"the guest could not start the command: {for_terminal(rest, one_line=True)}",
                    hint="look inside the guest with `aq console NAME`",
                )
            elif kind == "R" and self.started:
                try:
                    status, out_bytes, err_bytes = (int(x) for x in rest.split())
                except ValueError:
                    raise ChannelError(
                        f"the guest sent a malformed result: {for_terminal(rest, one_line=True)}",
                        hint="the guest agent is broken or hostile; restart the VM",
                    ) from None
                self.status = status
                self.out.expected = out_bytes
                self.err.expected = err_bytes

    def _on_stdin(self, never_blocks: bool) -> None:
        """Send what stdin has now (up to FRAME_MAX) as one frame, then EOF if it ended."""
        assert self.options.stdin is not None
        fd = self.options.stdin.fileno()
        if never_blocks:
            parts = [os.read(fd, FRAME_MAX)]
        else:
            # Gather what keeps coming into one frame: a writer such as tar hands a pipe
            # 10 KiB at a time, and every frame costs the guest a process.
            parts = [os.read(fd, CHUNK)]
            size = len(parts[0])
            while parts[-1] and size < FRAME_MAX and select.select([fd], [], [], GATHER)[0]:
                parts.append(os.read(fd, min(CHUNK, FRAME_MAX - size)))
                size += len(parts[-1])
        data = b"".join(parts)
        if data:
            self.send(b"D %d\n" % len(data) + data)
        if not parts[-1]:  # the last read found the end of stdin
            self.send(b"E\n")
            self.stdin_open = False

    def _stdin_wanted(self) -> bool:
        """Read more stdin only once the previous frame is on its way (back-pressure)."""
        return self.started and self.stdin_open and not self.outgoing

    def _done(self) -> bool:
        return self.status is not None and self.out.complete and self.err.complete

    def run(self, argv_line: bytes) -> int:
        held = self.held
        held.ctl.setblocking(False)
        self.selector.register(held.ctl, selectors.EVENT_READ, "ctl")
        self.selector.register(held.out, selectors.EVENT_READ, self.out)
        self.selector.register(held.err, selectors.EVENT_READ, self.err)
        stdin = self.options.stdin
        stdin_regular = stdin is not None and _never_blocks(stdin)
        stdin_registered = False
        self.send(f"S {self.nonce}\n".encode())
        deadline = None
        if self.options.timeout is not None:
            deadline = time.monotonic() + self.options.timeout
        timed_out = False
        start_sent = time.monotonic()
        give_up = start_sent + START_WAIT
        while not self._done():
            if not self.started:
                if self.signals:
                    # Nothing runs in the guest yet: stop here rather than wait for it.
                    raise KeyboardInterrupt
                if time.monotonic() > give_up:
                    raise GuestTimeout(
                        f"the guest's command agent did not answer within {START_WAIT:.0f}s",
                        hint="the guest may be overloaded or hung; see `aq console NAME`",
                    )
                if time.monotonic() - start_sent > START_REPEAT:
                    # An S that reaches the guest while the slot's previous session
                    # closes its port is discarded there; the agent skips repeats.
                    self.send(f"S {self.nonce}\n".encode())
                    start_sent = time.monotonic()
            while self.signals and self.started:
                self.send(f"K {self.signals.pop(0)}\n".encode())
            if stdin is not None and not stdin_regular:
                wanted = self._stdin_wanted()
                if wanted != stdin_registered:
                    if wanted:
                        self.selector.register(stdin, selectors.EVENT_READ, "stdin")
                    else:
                        self.selector.unregister(stdin)
                    stdin_registered = wanted
            elif stdin_regular and self._stdin_wanted():
                self._on_stdin(never_blocks=True)
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.outgoing else 0)
            self.selector.modify(held.ctl, events, "ctl")
            wait = 0.5
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    if not self.started:
                        raise GuestTimeout(
                            "the guest's command agent did not answer within "
                            f"{self.options.timeout:.0f}s",
                            hint="the guest may be overloaded or hung; see `aq console NAME`",
                        )
                    if timed_out:
                        raise GuestTimeout("the command did not stop after its timeout")
                    timed_out = True
                    self.signals.append("KILL")
                    deadline = time.monotonic() + 15  # time for the agent to report
                    continue
                wait = min(wait, left)
            for key, mask in self.selector.select(wait):
                if key.data == "ctl":
                    if mask & selectors.EVENT_WRITE:
                        self._flush()
                    if mask & selectors.EVENT_READ:
                        self._on_ctl(argv_line)
                elif key.data == "stdin":
                    self._on_stdin(never_blocks=False)
                else:
                    key.data.on_readable()
                    if key.data.closed:
                        self.selector.unregister(key.fileobj)
                        if not key.data.complete:
                            raise ChannelError(
                                "the command channel closed before the command finished",
                                hint="the VM may have stopped; `aq status NAME`",
                            )
        self.selector.close()
        assert self.status is not None
        return TIMEOUT_EXIT if timed_out else self.status


def run(files: VmFiles, argv: Sequence[str], options: ExecOptions) -> int:
    """Run `argv` in the guest as root; stream its output; return its exit status.

    Ctrl-C (SIGINT) is forwarded to the guest command; a second one kills it.
    """
    line = command_line(argv)
    with slot(files) as held:
        session = _Session(held, options)
        interrupts = 0

        def forward(signum, _frame) -> None:
            nonlocal interrupts
            interrupts += 1
            session.signals.append("INT" if interrupts == 1 else "KILL")

        try:
            previous = signal.signal(signal.SIGINT, forward)
        except ValueError:  # not the main thread, which alone may handle signals
            return session.run(line)
        previous_term = signal.signal(signal.SIGTERM, lambda *_: session.signals.append("TERM"))
        try:
            return session.run(line)
        finally:
            signal.signal(signal.SIGINT, previous)
            signal.signal(signal.SIGTERM, previous_term)


def capture(
    files: VmFiles,
    argv: Sequence[str],
    stdin: bytes | None = None,
    timeout: float | None = 60,
    limit: int = CAPTURE_MAX,
) -> tuple[int, bytes, bytes]:
    """Run `argv` and collect its output (for aq's own use: small outputs, each stream
    at most `limit` bytes, or ChannelError)."""
    import tempfile

    out, err = Bounded(limit), Bounded(limit)
    with tempfile.TemporaryFile() as source:
        source.write(stdin or b"")
        source.seek(0)
        given = source if stdin is not None else None
        status = run(files, argv, ExecOptions(given, out, err, timeout))
    return status, out.getvalue(), err.getvalue()
