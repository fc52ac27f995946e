"""Downloading a release file: to a private .part file, resumed with HTTP Range
within one run, and never larger than the release says.

The caller verifies the finished .part file and moves it into place. Until then its
bytes are unverified, so it lives only under AQ_HOME/images, readable by its owner
only, and it is deleted on every way out that is not success: a size overrun, a
mirror that is too slow, a cut that retries cannot mend, Ctrl-C. A stale .part from
an earlier run is discarded rather than resumed (it was never verified).
"""

from __future__ import annotations

import http.client
import os
import urllib.error
from pathlib import Path

from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from aq import paths
from aq.errors import AqError, VerificationFailed
from aq.images.http import MIN_RATE, open_url, shown
from aq.progress import Progress

CHUNK = 1 << 20
ATTEMPTS = 6
RETRY_FOR_S = 1800  # no new attempt starts after this long
HARD_CAP = 1 << 30  # when the release gives no size


class Interrupted(Exception):
    """The connection ended before the whole file arrived; worth resuming."""


def part_path(dest: Path) -> Path:
    return paths.part_file(dest)


def _open_part(part: Path, append: bool):
    """The .part file, owner-only, never through a symlink someone left there."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    flags |= os.O_APPEND if append else os.O_TRUNC
    return os.fdopen(os.open(part, flags, 0o600), "ab" if append else "wb")


def _too_big(name: str, cap: int) -> VerificationFailed:
    return VerificationFailed(
        f"the mirror sent more than the {cap} bytes expected for {shown(name)}",
        hint="the mirror is broken or hostile; try another (`aq config set mirror URL`)",
    )


def _fetch_once(url: str, part: Path, cap: int, progress: Progress, label: str) -> None:
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with open_url(url, headers=headers) as response:
            if offset and response.status != 206:
                offset = 0  # the server ignored the Range header: start over
            length = response.headers.get("Content-Length")
            remaining = int(length) if length and length.isdigit() else None
            total = offset + remaining if remaining is not None else None
            if total is not None and total > cap:
                raise _too_big(label, cap)
            received = 0
            with (
                _open_part(part, append=bool(offset)) as out,
                progress.transfer(label, total, offset) as advance,
            ):
                while True:
                    try:
                        block = response.read_block(CHUNK)
                    except (http.client.HTTPException, OSError) as err:
                        raise Interrupted(str(err)) from err
                    if not block:
                        break
                    received += len(block)
                    if offset + received > cap:
                        raise _too_big(label, cap)
                    out.write(block)
                    response.deadline.extend(len(block) / MIN_RATE)
                    advance(len(block))
            if remaining is not None and received < remaining:
                raise Interrupted(f"got {offset + received} of {total} bytes")
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # already complete; let verification decide
            return
        raise AqError(
            f"the mirror answered {err.code} {shown(err.reason)} for {shown(url)}"
        ) from None


def download(url: str, dest: Path, progress: Progress, size: int | None = None) -> Path:
    """Fetch `url` into `dest`'s .part file (at most `size` bytes), resuming after
    cuts a few times; return the .part file, or raise having deleted it."""
    part = part_path(dest)
    for path in (dest, part):
        try:
            paths.inside_images(path)
        except ValueError:
            raise AqError(
                f"refusing to write {shown(path)}: it is not inside aq's images"
            ) from None
    cap = size if size else HARD_CAP
    part.unlink(missing_ok=True)  # unverified bytes from an earlier run: start afresh
    retrying = Retrying(
        retry=retry_if_exception_type(Interrupted),
        stop=stop_after_attempt(ATTEMPTS) | stop_after_delay(RETRY_FOR_S),
        wait=wait_exponential(multiplier=0.5, max=10),
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    done = part.stat().st_size if part.exists() else 0
                    progress.step(f"resuming {dest.name} from byte {done}")
                _fetch_once(url, part, cap, progress, dest.name)
    except Interrupted as err:
        part.unlink(missing_ok=True)
        raise AqError(
            f"the download of {shown(dest.name)} kept breaking off ({shown(err)})",
            hint="run the command again",
        ) from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return part
