"""Small HTTP helpers over urllib, with errors that name the mirror and the fix."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import IO

from aq import __version__
from aq.errors import AqError, Offline

TIMEOUT_S = 30
USER_AGENT = f"aq/{__version__}"


def _offline(url: str, err: Exception) -> Offline:
    reason = getattr(err, "reason", err)
    return Offline(
        f"cannot reach the Alpine mirror at {url}: {reason}",
        hint="check the network, or point aq at another mirror with AQ_MIRROR "
        "or `aq config set mirror URL`",
    )


def open_url(url: str, headers: dict[str, str] | None = None, timeout: float = TIMEOUT_S) -> IO:
    """Open `url` for reading; Offline when the host cannot be reached."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416:
            raise
        raise AqError(f"the mirror answered {err.code} {err.reason} for {url}") from err
    except (urllib.error.URLError, OSError) as err:
        raise _offline(url, err) from err


def fetch(url: str, limit: int = 16 << 20) -> bytes:
    """The whole (small) body at `url`."""
    with open_url(url) as response:
        try:
            return response.read(limit)
        except OSError as err:
            raise _offline(url, err) from err
