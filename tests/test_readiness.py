"""The boot wait's view of the console: this boot's bytes only, each read once, bounded."""

from __future__ import annotations

from pathlib import Path

from aq import paths, readiness


def test_the_console_is_read_once_per_round_from_this_boots_offset(tmp_path: Path) -> None:
    files = paths.VmFiles(tmp_path)
    files.console_log.write_bytes(b"Kernel panic - not syncing: last boot's\n")
    watch = readiness.ConsoleWatch(files, offset=files.console_log.stat().st_size)
    watch.read_new()
    assert watch.found(readiness.PANIC) is None  # an earlier boot's panic is not this one's
    with files.console_log.open("ab") as log:
        log.write(b"OpenRC 0.63 is starting up Linux\nKernel panic - not syncing: VFS: oops\n")
    assert not watch.saw(readiness.USERLAND)  # nothing new is read until the next round
    watch.read_new()
    assert watch.saw(readiness.USERLAND)
    panic = watch.found(readiness.PANIC)
    assert panic is not None and panic.group(1) == b"VFS: oops"
    watch.read_new()  # nothing new: what was seen stays
    assert watch.saw(readiness.USERLAND)


def test_what_the_console_holds_is_bounded(tmp_path: Path) -> None:
    files = paths.VmFiles(tmp_path)
    files.console_log.write_bytes(b"x" * (3 * readiness.SCAN_MAX))
    watch = readiness.ConsoleWatch(files, offset=0)
    for _ in range(3):
        watch.read_new()
    assert len(watch.seen) == readiness.SCAN_MAX
    assert watch.position == 3 * readiness.SCAN_MAX


def test_a_missing_console_log_is_nothing_yet(tmp_path: Path) -> None:
    watch = readiness.ConsoleWatch(paths.VmFiles(tmp_path / "gone"), offset=0)
    watch.read_new()
    assert watch.found(readiness.PANIC) is None
