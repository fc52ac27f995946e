"""Waiting for a booting VM to be ready: it is when its command channel answers.

A VM boots with no command-channel port (aq.machine.BOOT_SLOTS says why), so while it
boots this also plugs in slot 0 as soon as the console shows the guest's userland
starting (OpenRC's banner, or a login prompt), or after PLUG_FALLBACK seconds when the
console says nothing recognisable; then it pings the agent until it answers. A kernel
panic on the console ends the wait at once: a panic early in boot, before the guest
has loaded its pvpanic driver, tells QEMU nothing, and the guest would sit until the
boot timeout (15 minutes by default).
"""

from __future__ import annotations

import re
import time

from aq import machine, paths
from aq.guest import channel
from aq.qemu import process
from aq.safetext import for_terminal

LOGIN = re.compile(rb"login: ?", re.M)
USERLAND = re.compile(rb"OpenRC [^\n]{0,40}is starting up|login: ?")
# The kernel's own words; what follows them is the guest's (shown escaped, bounded).
PANIC = re.compile(rb"Kernel panic - not syncing: ?([^\r\n]{0,160})")
PLUG_FALLBACK = 60.0  # seconds after launch
SCAN_MAX = 1 << 20  # bytes of console output kept for matching


class BootFailed(Exception):
    """The boot failed; `guest_timed_out` says QEMU ran but the guest never answered."""

    def __init__(self, reason: str, guest_timed_out: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.guest_timed_out = guest_timed_out


class ConsoleWatch:
    """This boot's console output (from `offset` in console.log), read as it grows."""

    def __init__(self, files: paths.VmFiles, offset: int) -> None:
        self.files, self.position, self.seen = files, offset, b""

    def read_new(self) -> None:
        """Take in what the console printed since the last call (at most SCAN_MAX)."""
        try:
            with self.files.console_log.open("rb") as log:
                log.seek(self.position)
                data = log.read(SCAN_MAX)
        except FileNotFoundError:
            data = b""
        self.position += len(data)
        self.seen = (self.seen + data)[-SCAN_MAX:]

    def found(self, pattern: re.Pattern[bytes]) -> re.Match[bytes] | None:
        return pattern.search(self.seen)

    def saw(self, pattern: re.Pattern[bytes]) -> bool:
        return self.found(pattern) is not None


def wait(files: paths.VmFiles, ident: process.Identity, offset: int, timeout: float) -> None:
    """Until the command channel answers (the guest can run commands: that is ready)."""
    from aq.qemu.monitor import MonitorError

    started = time.monotonic()
    deadline = started + timeout
    console = ConsoleWatch(files, offset)
    plugged = machine.BOOT_SLOTS > 0
    while True:
        if not process.is_alive(ident, files.pidfile):
            raise BootFailed("QEMU exited during boot")
        console.read_new()  # once per round; every pattern is searched in what it holds
        panic = console.found(PANIC)
        if panic is not None:
            why = for_terminal(panic.group(1).strip(), one_line=True) or "no reason given"
            raise BootFailed(f"the guest's kernel panicked during boot: {why}")
        if not plugged and (console.saw(USERLAND) or time.monotonic() - started > PLUG_FALLBACK):
            try:
                machine.add_slots(files, range(1))
            except MonitorError as err:
                raise BootFailed(f"could not plug in the command channel: {err.message}") from None
            plugged = True
        if plugged and channel.ping(files, timeout=min(1.0, max(deadline - time.monotonic(), 0.1))):
            return
        if time.monotonic() > deadline:
            login = console.saw(LOGIN)
            what = "the command channel did not answer" if login else "no login prompt"
            raise BootFailed(
                f"the guest was not ready within {timeout:.0f}s ({what})", guest_timed_out=True
            )
        # A ping that went unanswered has already waited; at once again, as an agent
        # that opens its port while no ping is connected waits for the next one.
        time.sleep(0.02 if plugged else 0.25)


def add_other_slots(files: paths.VmFiles) -> str:
    """Once ready: the other command slots; a note for the history if they failed."""
    from aq.qemu.monitor import MonitorError

    try:
        machine.add_slots(files, range(max(machine.BOOT_SLOTS, 1), channel.SLOTS))
    except MonitorError as err:
        return f"; only one command slot: {err.message}"
    return ""
