"""Serve a mirror directory over HTTP on 127.0.0.1, the way the tests need it.

* An ephemeral port; `start_server(root) -> (server, base_url)`; `server.stop()`.
* `Range: bytes=N-` and `bytes=N-M` (206 + Content-Range; 416 when unsatisfiable):
  aq resumes interrupted downloads.
* Fault injection: `server.cut_after(path_suffix, nbytes, times=1)` makes the next
  `times` GETs of a path ending in `path_suffix` send their headers (with the full
  Content-Length) and then only `nbytes` of the body before the connection is closed.
* Bookkeeping: `server.count(path_suffix)` counts GET requests, `server.requests`
  lists every request as (method, path, Range header or None, status), and
  `server.bytes_sent(path_suffix)` the body bytes actually sent.
  `server.reset()` clears the counters and pending cuts.
"""

from __future__ import annotations

import re
import threading
import urllib.parse
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class _Handler(SimpleHTTPRequestHandler):
    server: MirrorServer
    protocol_version = "HTTP/1.1"

    def __init__(self, request, client_address, server: MirrorServer):
        super().__init__(request, client_address, server, directory=str(server.root))

    def log_message(self, format: str, *args) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def _serve(self, body: bool) -> None:
        url_path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        range_header = self.headers.get("Range")
        fs_path = Path(self.translate_path(self.path))
        if fs_path.is_dir() or not fs_path.is_file():
            # directory listings and 404s: the stock handler
            status = HTTPStatus.NOT_FOUND if not fs_path.exists() else HTTPStatus.OK
            self.server._record(self.command, url_path, range_header, int(status), 0)
            return super().do_GET() if body else super().do_HEAD()

        size = fs_path.stat().st_size
        start, end = 0, size - 1
        status = HTTPStatus.OK
        if range_header:
            m = _RANGE.match(range_header.strip())
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start = int(m.group(1))
                    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                else:  # suffix range: the last N bytes
                    start = max(size - int(m.group(2)), 0)
                if start >= size or start > end:
                    self.server._record(self.command, url_path, range_header, 416, 0)
                    self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = HTTPStatus.PARTIAL_CONTENT
            # an unparseable Range is ignored, as RFC 9110 allows
        length = end - start + 1
        cut = self.server._take_cut(url_path) if body else None

        self.send_response(status)
        self.send_header("Content-Type", self.guess_type(str(fs_path)))
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Last-Modified", self.date_time_string(int(fs_path.stat().st_mtime)))
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        if cut is not None:
            self.send_header("Connection", "close")
        self.end_headers()
        sent = 0
        if body:
            limit = length if cut is None else min(cut, length)
            try:
                with open(fs_path, "rb") as f:
                    f.seek(start)
                    while sent < limit:
                        chunk = f.read(min(1 << 16, limit - sent))
                        if not chunk:
                            break
                        self.wfile.write(chunk)
                        sent += len(chunk)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass
            if cut is not None:
                self.close_connection = True
        self.server._record(self.command, url_path, range_header, int(status), sent)


class MirrorServer(ThreadingHTTPServer):
    """A threaded HTTP server for one directory; see the module docstring."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 0, verbose: bool = False):
        self.root = Path(root)
        self.verbose = verbose
        self._lock = threading.Lock()
        self._cuts: list[list] = []  # [suffix, nbytes, times_left]
        self.requests: list[tuple[str, str, str | None, int]] = []
        self._sent: dict[str, int] = {}
        self._thread: threading.Thread | None = None
        super().__init__((host, port), _Handler)

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    # --- test hooks ---------------------------------------------------------------------
    def cut_after(self, path_suffix: str, nbytes: int, times: int = 1) -> None:
        """Cut the next `times` GET responses for paths ending in `path_suffix` after `nbytes`."""
        with self._lock:
            self._cuts.append([path_suffix, nbytes, times])

    def count(self, path_suffix: str, method: str = "GET") -> int:
        with self._lock:
            return sum(
                1 for m, p, _r, _s in self.requests if m == method and p.endswith(path_suffix)
            )

    def bytes_sent(self, path_suffix: str) -> int:
        with self._lock:
            return sum(n for p, n in self._sent.items() if p.endswith(path_suffix))

    def reset(self) -> None:
        with self._lock:
            self._cuts.clear()
            self.requests.clear()
            self._sent.clear()

    def _take_cut(self, url_path: str) -> int | None:
        with self._lock:
            for cut in self._cuts:
                if url_path.endswith(cut[0]) and cut[2] > 0:
                    cut[2] -= 1
                    return cut[1]
        return None

    def _record(self, method: str, path: str, rng: str | None, status: int, sent: int) -> None:
        with self._lock:
            self.requests.append((method, path, rng, status))
            self._sent[path] = self._sent.get(path, 0) + sent

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> MirrorServer:
        self._thread = threading.Thread(target=self.serve_forever, name="mirror-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join(10)
            self._thread = None
        self.server_close()

    def __enter__(self) -> MirrorServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_server(
    root: Path, host: str = "127.0.0.1", port: int = 0, verbose: bool = False
) -> tuple[MirrorServer, str]:
    """Serve `root` in a background thread; return (server, base_url). Stop with server.stop()."""
    if not Path(root).is_dir():
        raise FileNotFoundError(root)
    server = MirrorServer(root, host, port, verbose).start()
    return server, server.base_url


__all__ = ["MirrorServer", "start_server"]
