"""Talking QMP to a running VM, with the QEMU project's own library (qemu.qmp).

A CLI needs short synchronous sessions: connect, send one or two commands,
disconnect. qemu.qmp's async client is driven on a private event loop so that every
step has a deadline: the legacy synchronous wrapper waits forever in negotiation when
the socket accepts but never greets (a wedged QEMU), and `aq status` / `aq ls` must
never hang. Connections are retried briefly (the socket may not exist yet).
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


class MonitorError(AqError):
    pass


class Monitor:
    """A short QMP session: `with Monitor(path) as qmp: qmp.command("query-status")`.

    Connecting and negotiating together take at most `connect_timeout` seconds; each
    command at most `command_timeout`."""

    def __init__(
        self, path: Path, connect_timeout: float = 10.0, command_timeout: float = COMMAND_TIMEOUT
    ) -> None:
        self.path = path
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None

    def _sync(self, awaitable: Any, timeout: float) -> Any:
        assert self._loop is not None
        return self._loop.run_until_complete(asyncio.wait_for(awaitable, max(timeout, 0.01)))

    def __enter__(self) -> Monitor:
        from qemu.qmp import QMPClient, QMPError

        logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)
        self._loop = asyncio.new_event_loop()
        deadline = time.monotonic() + self.connect_timeout
        address = short_socket_path(self.path)
        while True:
            client = QMPClient()
            try:
                self._sync(client.connect(address), deadline - time.monotonic())
                self._client = client
                return self
            except (TimeoutError, OSError, QMPError) as err:
                self._disconnect(client)
                if time.monotonic() + 0.1 >= deadline or isinstance(err, asyncio.TimeoutError):
                    self._close_loop()
                    why = "no answer in time" if isinstance(err, asyncio.TimeoutError) else err
                    raise MonitorError(
                        f"cannot talk to QEMU's monitor ({self.path.name}): {why}",
                        hint="QEMU may be wedged; `aq stop --force NAME` stops it",
                    ) from None
                time.sleep(0.1)
            except BaseException:
                self._disconnect(client)
                self._close_loop()
                raise

    def _disconnect(self, client: Any) -> None:
        with contextlib.suppress(Exception):
            self._sync(client.disconnect(), 2.0)

    def _close_loop(self) -> None:
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            self._disconnect(self._client)
            self._client = None
        self._close_loop()

    def command(self, name: str, /, **args: Any) -> Any:
        from qemu.qmp import QMPError

        try:
            return self._sync(self._client.execute(name, args or None), self.command_timeout)
        except TimeoutError:
            raise MonitorError(
                f"QMP {name}: QEMU did not answer within {self.command_timeout:.0f}s"
            ) from None
        except (OSError, QMPError, EOFError) as err:
            raise MonitorError(f"QMP {name} failed: {err}") from err


def query_status(path: Path) -> str | None:
    """QEMU's run state ('running', 'paused', 'guest-panicked', ...), or None."""
    try:
        with Monitor(path, connect_timeout=2.0, command_timeout=2.0) as qmp:
            return qmp.command("query-status").get("status")
    except MonitorError:
        return None
