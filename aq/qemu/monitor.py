"""Talking QMP to a running VM, with the QEMU project's own library (qemu.qmp).

A CLI needs short sessions: connect, send one or two commands, disconnect. Every step
has a deadline, negotiation included: a wedged QEMU (or anything else listening on the
socket) that accepts the connection and then says nothing must not hang `aq ls` or
`aq status`. Connections are retried briefly, since the socket may not exist yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from aq.errors import AqError
from aq.paths import short_socket_path

COMMAND_TIMEOUT = 10.0  # seconds for one QMP command's answer
RETRY_EVERY = 0.1


class MonitorError(AqError):
    pass


class Monitor:
    """A short QMP session: `with Monitor(path) as qmp: qmp.command("query-status")`.

    `connect_timeout` bounds connecting and negotiating together (with retries).
    """

    def __init__(
        self, path: Path, connect_timeout: float = 10.0, command_timeout: float = COMMAND_TIMEOUT
    ) -> None:
        self.path = path
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None

    def _run(self, coroutine, timeout: float):
        assert self._loop is not None
        return self._loop.run_until_complete(asyncio.wait_for(coroutine, timeout))

    def __enter__(self) -> Monitor:
        from qemu.qmp import QMPClient, QMPError

        logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)
        self._loop = asyncio.new_event_loop()
        deadline = time.monotonic() + self.connect_timeout
        address = short_socket_path(self.path)
        while True:
            client = QMPClient("aq")
            try:
                self._run(client.connect(address), max(deadline - time.monotonic(), 0.05))
                self._client = client
                return self
            except (OSError, QMPError, TimeoutError) as err:
                with contextlib.suppress(Exception):
                    self._run(client.disconnect(), 2.0)
                if time.monotonic() + RETRY_EVERY >= deadline:
                    self._close_loop()
                    what = "did not answer in time" if isinstance(err, TimeoutError) else err
                    raise MonitorError(
                        f"cannot talk to QEMU's monitor ({self.path.name}): {what}"
                    ) from err
                time.sleep(RETRY_EVERY)

    def _close_loop(self) -> None:
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._run(self._client.disconnect(), 2.0)
            self._client = None
        self._close_loop()

    def command(self, name: str, **args: Any) -> Any:
        from qemu.qmp import QMPError

        try:
            return self._run(self._client.execute(name, args or None), self.command_timeout)
        except TimeoutError as err:
            raise MonitorError(f"QMP {name}: QEMU did not answer in time") from err
        except (OSError, QMPError, EOFError) as err:
            raise MonitorError(f"QMP {name} failed: {err}") from err


def query_status(path: Path) -> str | None:
    """QEMU's run state ('running', 'paused', 'guest-panicked', ...), or None."""
    try:
        with Monitor(path, connect_timeout=2.0, command_timeout=2.0) as qmp:
            return qmp.command("query-status").get("status")
    except MonitorError:
        return None
