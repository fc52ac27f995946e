"""Talking QMP to a running VM, with the QEMU project's own library (qemu.qmp).

The synchronous `QEMUMonitorProtocol` wrapper suits a CLI: connect, send one or two
commands, disconnect. Connections are retried briefly (the socket may not exist yet).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from aq.errors import AqError
from aq.paths import short_socket_path


class MonitorError(AqError):
    pass


class Monitor:
    """A short QMP session: `with Monitor(path) as qmp: qmp.command("query-status")`."""

    def __init__(self, path: Path, connect_timeout: float = 10.0) -> None:
        self.path = path
        self.connect_timeout = connect_timeout
        self._qmp: Any = None

    def __enter__(self) -> Monitor:
        from qemu.qmp import QMPError
        from qemu.qmp.legacy import QEMUMonitorProtocol

        logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)
        retrying = Retrying(
            retry=retry_if_exception_type((OSError, QMPError)),
            stop=stop_after_delay(self.connect_timeout),
            wait=wait_fixed(0.1),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    qmp = QEMUMonitorProtocol(short_socket_path(self.path))
                    try:
                        qmp.connect(negotiate=True)
                    except BaseException:
                        qmp.close()
                        raise
        except (OSError, QMPError) as err:
            raise MonitorError(f"cannot talk to QEMU's monitor ({self.path.name}): {err}") from err
        self._qmp = qmp
        return self

    def __exit__(self, *exc: object) -> None:
        if self._qmp is not None:
            with contextlib.suppress(Exception):
                self._qmp.close()

    def command(self, name: str, **args: Any) -> Any:
        from qemu.qmp import QMPError

        try:
            return self._qmp.cmd(name, **args)
        except (OSError, QMPError, EOFError) as err:
            raise MonitorError(f"QMP {name} failed: {err}") from err


def query_status(path: Path) -> str | None:
    """QEMU's run state ('running', 'paused', 'guest-panicked', ...), or None."""
    try:
        with Monitor(path, connect_timeout=2.0) as qmp:
            return qmp.command("query-status").get("status")
    except MonitorError:
        return None
