"""Downloading a release file: to a .part file, resumed with HTTP Range after a cut.

The caller verifies the finished file and moves it into place; nothing here records
anything, so a failed or bad download leaves no trace but the .part file, which the
next attempt resumes (or discards when the server will not resume).
"""

from __future__ import annotations

import http.client
import urllib.error
from pathlib import Path

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from aq.errors import AqError
from aq.images.http import open_url
from aq.progress import Progress

CHUNK = 1 << 20
ATTEMPTS = 6


class Interrupted(Exception):
    """The connection ended before the whole file arrived; worth resuming."""


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _fetch_once(url: str, part: Path, progress: Progress, label: str) -> None:
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = open_url(url, headers=headers)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # already complete; let verification decide
            return
        raise
    with response:
        if offset and response.status != 206:
            offset = 0  # the server ignored the Range header: start over
        length = response.headers.get("Content-Length")
        remaining = int(length) if length is not None else None
        total = offset + remaining if remaining is not None else None
        received = 0
        with (
            part.open("ab" if offset else "wb") as out,
            progress.transfer(label, total, offset) as advance,
        ):
            while True:
                try:
                    block = response.read(CHUNK)
                except (http.client.IncompleteRead, OSError) as err:
                    raise Interrupted(str(err)) from err
                if not block:
                    break
                out.write(block)
                received += len(block)
                advance(len(block))
        if remaining is not None and received < remaining:
            raise Interrupted(f"got {offset + received} of {total} bytes")


def download(url: str, dest: Path, progress: Progress) -> Path:
    """Fetch `url` into `dest`'s .part file, resuming up to a few times; return it."""
    part = part_path(dest)
    retrying = Retrying(
        retry=retry_if_exception_type(Interrupted),
        stop=stop_after_attempt(ATTEMPTS),
        wait=wait_exponential(multiplier=0.5, max=10),
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    progress.step(f"resuming {dest.name} from byte {part.stat().st_size}")
                _fetch_once(url, part, progress, dest.name)
    except Interrupted as err:
        raise AqError(
            f"the download of {dest.name} kept breaking off ({err})",
            hint="run the command again; it resumes where it stopped",
        ) from None
    return part
