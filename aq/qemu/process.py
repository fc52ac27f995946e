"""The QEMU process of a VM: launching it daemonized, telling whether it is ours, ending it.

A pid alone proves nothing (pids are reused), so aq records the process's start time
with its pid and checks both, plus that the command line names this VM's pid file.
Processes are only ever signalled by the pid aq recorded, never found by name.
"""

from __future__ import annotations

import os
import signal
import time
from collections import namedtuple
from pathlib import Path

from aq.errors import AqError
from aq.paths import PRIVATE_UMASK, open_private, write_private

START_TIME_SLACK = 2.0


class Identity(namedtuple("Identity", "pid started")):  # see aq.paths.VmFiles
    """A process: its pid (int) and start time (float, seconds since the epoch), which
    together name it even after the pid is reused."""

    __slots__ = ()


def identity(pid: int) -> Identity | None:
    """The identity of a live process, or None if there is no such process."""
    import psutil

    try:
        return Identity(pid, psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return None


def is_alive(ident: Identity | None, pidfile: Path | None = None) -> bool:
    """Whether the process `ident` still runs (and, given `pidfile`, is that VM's QEMU)."""
    if ident is None:
        return False
    answer = _alive_in_proc(ident, pidfile)
    if answer is not None:
        return answer
    import psutil

    try:
        proc = psutil.Process(ident.pid)
        if abs(proc.create_time() - ident.started) > START_TIME_SLACK:
            return False
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if pidfile is not None:
            try:
                cmdline = " ".join(proc.cmdline())
            except (psutil.AccessDenied, psutil.ZombieProcess):
                return True
            return str(pidfile) in cmdline
        return True
    except psutil.NoSuchProcess:
        return False


def _alive_in_proc(ident: Identity, pidfile: Path | None) -> bool | None:
    """is_alive read straight from Linux's /proc, as psutil computes it there (start
    time: the boot time plus the process's start in clock ticks), without importing
    psutil: `aq exec` asks this once per run, and the import is an eighth of a run.
    None where there is no /proc (macOS): psutil answers then."""
    try:
        with open(f"/proc/{ident.pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except FileNotFoundError:
        return False if os.path.isdir("/proc/self") else None
    except (OSError, IndexError):
        return None
    try:
        with open("/proc/stat", "rb") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    if abs(started - ident.started) > START_TIME_SLACK or fields[0] == b"Z":
        return False
    if pidfile is None:
        return True
    try:
        with open(f"/proc/{ident.pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return False
    except OSError:
        return True  # as with psutil's AccessDenied
    return str(pidfile) in cmdline


def from_pidfile(pidfile: Path) -> Identity | None:
    """The live QEMU that wrote `pidfile`, found before aq recorded its pid, or None.

    QEMU writes its pid file as soon as it daemonizes; an aq killed before recording
    that pid leaves the file as the only trace. The process counts only if its
    command line names this very pid file (a reused pid does not).
    """
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    ident = identity(pid)
    return ident if is_alive(ident, pidfile) else None


def wait_gone(ident: Identity, timeout: float, pidfile: Path | None = None) -> bool:
    """Wait until the process has exited; whether it did within `timeout`."""
    deadline = time.monotonic() + timeout
    while is_alive(ident, pidfile):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def kill(ident: Identity, pidfile: Path | None = None, timeout: float = 10.0) -> None:
    """SIGKILL the process if it is still the one recorded, and wait for it to go."""
    if is_alive(ident, pidfile):
        try:
            os.kill(ident.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        wait_gone(ident, timeout, pidfile)


class LaunchError(AqError):
    def __init__(self, message: str, stderr: str) -> None:
        super().__init__(message)
        self.stderr = stderr


def launch(argv: list[str], pidfile: Path, cmdline_file: Path, stderr_file: Path) -> Identity:
    """Run QEMU with -daemonize; return the daemon's identity once QEMU is up.

    QEMU's parent process exits only after the daemon has created its sockets, so when
    this returns the QMP and console sockets exist. The command line and QEMU's own
    stderr are kept in the VM's folder for diagnosis.
    """
    running = from_pidfile(pidfile)
    if running is not None:  # read before deleting: never lose track of a live QEMU
        raise LaunchError(f"a QEMU of this VM is already running (pid {running.pid})", "")
    import subprocess  # only here: `aq exec` checks liveness without it

    pidfile.unlink(missing_ok=True)
    write_private(cmdline_file, " ".join(_quote(a) for a in argv) + "\n")
    with open_private(stderr_file) as err:
        try:
            code = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                timeout=120,
                check=False,
                umask=PRIVATE_UMASK,
            ).returncode
        except subprocess.TimeoutExpired:
            raise LaunchError("QEMU did not start within 120s", "") from None
    stderr = stderr_file.read_text(errors="replace").strip()
    if code != 0:
        raise LaunchError(f"QEMU failed to start: {_last_line(stderr)}", stderr)
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        raise LaunchError("QEMU started but wrote no pid file", stderr) from None
    ident = identity(pid)
    if ident is None:
        raise LaunchError(f"QEMU exited right after starting: {_last_line(stderr)}", stderr)
    return ident


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no error message"


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
