"""A stand-in for the guest agent on slot 0's control socket, listening as QEMU does."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from aq.paths import VmFiles, short_socket_path


def control_socket(root: Path, answer: int | None) -> tuple[VmFiles, list[str]]:
    """Slot 0's control socket in `root`. Each line it gets is kept; the line numbered
    `answer` (0: the first) is echoed and the connection closed, the lines before it
    go unanswered (dropped, as by an agent reopening its port); with None, nothing is
    answered and the connection is held 5 s."""
    root.mkdir(parents=True, exist_ok=True)
    files = VmFiles(root)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(short_socket_path(files.exec_socket(0, "ctl")))
    listener.listen(1)
    heard: list[str] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, listener:
            lines = conn.makefile()
            while True:
                line = lines.readline().strip()
                heard.append(line)
                if answer is None:
                    time.sleep(5)
                    return
                if len(heard) > answer:
                    conn.sendall(f"{line}\n".encode())
                    return

    threading.Thread(target=serve, daemon=True).start()
    return files, heard
