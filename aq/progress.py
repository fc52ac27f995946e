"""Progress on long work: step lines on stderr, and a byte bar only on a terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from aq.safetext import for_terminal


class Progress:
    """Reports what aq is doing; stdout stays clean for results and JSON."""

    def __init__(self, terminal: bool | None = None, quiet: bool = False) -> None:
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.quiet = quiet

    def step(self, text: str) -> None:
        """One line on stderr; mirror text in it (versions, file names) is made safe."""
        if not self.quiet:
            print(f"aq: {for_terminal(text, one_line=True)}", file=sys.stderr, flush=True)

    @contextmanager
    def transfer(
        self, label: str, total: int | None, done: int = 0
    ) -> Iterator[Callable[[int], None]]:
        """Yield `advance(nbytes)`; draws bytes, rate and time left on a terminal."""
        if not self.terminal or self.quiet:
            yield lambda _n: None
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import (
            Progress as Bar,
        )

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        from rich.markup import escape

        safe = escape(for_terminal(label, one_line=True))  # no escapes, no rich markup
        with Bar(*columns, console=Console(stderr=True), transient=False) as bar:
            task = bar.add_task(safe, total=total, completed=done)
            yield lambda n: bar.advance(task, n)


QUIET = Progress(terminal=False, quiet=True)
