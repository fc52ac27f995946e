"""HTTP from the mirror over urllib: every request bounded in time and size.

A mirror is not trusted to be quick or honest. Each request has a total deadline
(DEADLINE_S for the headers and small bodies; a large download earns one more second
per MIN_RATE bytes it receives), enforced by a watchdog that shuts the socket down, so
a mirror that trickles a byte a second cannot hold aq forever; each socket read also
has its own short timeout. Small bodies are refused past their cap instead of being
read into memory. Errors name the mirror with its text made safe for a terminal.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from aq import __version__
from aq.errors import AqError, Offline
from aq.safetext import for_terminal

DEADLINE_S = 90.0  # total for one request, so a trickling mirror fails well within 2 min
READ_TIMEOUT_S = 20.0  # for one socket read
MIN_RATE = 16 << 10  # bytes per second a long download must keep up, on average
SMALL_LIMIT = 1 << 20  # an index, a .asc or a .sha256
USER_AGENT = f"aq/{__version__}"
OFFLINE_HINT = (
    "check the network, or point aq at another mirror with AQ_MIRROR or `aq config set mirror URL`"
)


def shown(text: object) -> str:
    """Mirror-chosen text (a URL, a reason, a file name) as one safe line."""
    return for_terminal(str(text), one_line=True)


class Deadline:
    """A watchdog: when time runs out it shuts down every socket it was given."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._done = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._watch, name="aq-http-deadline", daemon=True).start()

    def _watch(self) -> None:
        while not self._done.wait(max(self.end - time.monotonic(), 0) + 0.01):
            if time.monotonic() >= self.end:
                with self._lock:
                    self.expired = True
                    for sock in self._sockets:
                        with suppress(OSError):
                            sock.shutdown(socket.SHUT_RDWR)
                return

    def track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def extend(self, seconds: float) -> None:
        self.end += seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def stop(self) -> None:
        self._done.set()


def _handlers(deadline: Deadline) -> list:
    """urllib handlers whose connections hand their sockets to `deadline`."""

    def tracked(base: type) -> type:
        class Connection(base):
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, **kwargs)
                create = self._create_connection

                def create_tracked(*a, **kw):
                    sock = create(*a, **kw)
                    deadline.track(sock)
                    return sock

                self._create_connection = create_tracked

        return Connection

    class Http(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(tracked(http.client.HTTPConnection), req)

    class Https(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(tracked(http.client.HTTPSConnection), req, context=self._context)

    class NoFtp(urllib.request.FTPHandler):
        def ftp_open(self, req):
            raise urllib.error.URLError("aq does not follow a mirror to ftp")

    return [Http(), Https(), NoFtp()]


def _offline(url: str, reason: object) -> Offline:
    return Offline(f"cannot reach the Alpine mirror at {shown(url)}: {shown(reason)}", OFFLINE_HINT)


def _too_slow(url: str) -> Offline:
    return Offline(
        f"the Alpine mirror at {shown(url)} did not answer in time (it sends too slowly)",
        OFFLINE_HINT,
    )


class Response:
    """An open response: its status and headers, and reads that honour the deadline."""

    def __init__(self, raw, url: str, deadline: Deadline) -> None:
        self.raw = raw
        self.url = url
        self.deadline = deadline
        self.status: int = raw.status
        self.headers = raw.headers

    def read_block(self, size: int) -> bytes:
        """At most `size` bytes (one socket read); b'' at the end of the body.
        Offline once the deadline has passed; OSError when the connection broke."""
        if self.deadline.left() <= 0:
            raise _too_slow(self.url)
        try:
            block = self.raw.read1(size)
        except (http.client.HTTPException, OSError):
            if self.deadline.expired:
                raise _too_slow(self.url) from None
            raise
        if self.deadline.expired:
            raise _too_slow(self.url)
        return block


@contextmanager
def open_url(
    url: str, headers: dict[str, str] | None = None, seconds: float | None = None
) -> Iterator[Response]:
    """Open `url`; Offline when the host cannot be reached or is too slow, AqError
    for an HTTP error status (urllib's HTTPError for 416, which callers handle)."""
    deadline = Deadline(DEADLINE_S if seconds is None else seconds)
    opener = urllib.request.build_opener(*_handlers(deadline))
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})
    try:
        try:
            raw = opener.open(request, timeout=READ_TIMEOUT_S)
        except urllib.error.HTTPError as err:
            err.close()
            if err.code == 416:
                raise
            raise AqError(
                f"the mirror answered {err.code} {shown(err.reason)} for {shown(url)}"
            ) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            if deadline.expired:
                raise _too_slow(url) from None
            raise _offline(url, getattr(err, "reason", err)) from None
        with raw:
            yield Response(raw, url, deadline)
    finally:
        deadline.stop()


def fetch(url: str, limit: int = SMALL_LIMIT) -> bytes:
    """The whole (small) body at `url`; refused when it is longer than `limit`."""
    chunks: list[bytes] = []
    received = 0
    with open_url(url) as response:
        while True:
            try:
                block = response.read_block(1 << 16)
            except (http.client.HTTPException, OSError) as err:
                raise _offline(url, err) from None
            if not block:
                break
            received += len(block)
            if received > limit:
                raise AqError(
                    f"the mirror sent more than {limit} bytes for {shown(url)}",
                    hint="that file should be small; try another mirror "
                    "(`aq config set mirror URL`)",
                )
            chunks.append(block)
    return b"".join(chunks)
