"""VM names: validation (a hostname label) and readable random names."""

from __future__ import annotations

import re

from aq.errors import InvalidInput

MAX_NAME = 63
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def validate_name(name: str) -> str:
    """Return `name` if it is a valid hostname label, else raise InvalidInput.

    The name becomes the guest's hostname and a folder on disk, so it must be a DNS
    label: lowercase letters, digits and hyphens, 1-63 characters, no leading or
    trailing hyphen.
    """
    if _LABEL.fullmatch(name):
        return name
    shown = name if len(name) <= 40 else name[:37] + "..."
    if len(name) > MAX_NAME:
        why = f"it is {len(name)} characters long (at most {MAX_NAME})"
    elif not name:
        why = "it is empty"
    elif name != name.lower() and _LABEL.fullmatch(name.lower()):
        why = "it has uppercase letters"
    elif name.startswith("-") or name.endswith("-"):
        why = "it starts or ends with a hyphen"
    else:
        why = "it may hold only lowercase letters, digits and hyphens"
    raise InvalidInput(
        f"invalid VM name {shown!r}: {why}", hint="use a hostname label such as 'guest-1'"
    )


def random_name() -> str:
    """A readable two-word name such as 'brave-otter'."""
    from coolname import generate_slug

    while True:
        name = generate_slug(2)
        if _LABEL.fullmatch(name):
            return name
