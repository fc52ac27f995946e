"""User settings: environment variables first, then `aq config` values, then defaults.

mirror        AQ_MIRROR        the Alpine mirror (default: Alpine's official CDN)
trusted-key   AQ_TRUSTED_KEY   one extra OpenPGP public key to accept beside Alpine's
accel         AQ_ACCEL         hvf, kvm or tcg instead of the detected accelerator
"""

from __future__ import annotations

import os

from aq import defaults
from aq.errors import InvalidInput
from aq.store.db import reading, writing
from aq.store.models import Setting

DEFAULT_MIRROR = "https://dl-cdn.alpinelinux.org/alpine"
SETTINGS = {
    "mirror": ("AQ_MIRROR", DEFAULT_MIRROR),
    "trusted-key": ("AQ_TRUSTED_KEY", None),
    "accel": ("AQ_ACCEL", None),
}


def _check_key(key: str) -> tuple[str, str | None]:
    try:
        return SETTINGS[key]
    except KeyError:
        known = ", ".join(SETTINGS)
        raise InvalidInput(f"unknown setting {key!r}", hint=f"settings are: {known}") from None


def stored(key: str) -> str | None:
    _check_key(key)
    with reading() as session:
        row = session.get(Setting, key)
        return row.value if row else None


def get(key: str) -> str | None:
    """The effective value: environment, then stored setting, then default."""
    env, default = _check_key(key)
    value = os.environ.get(env) or stored(key) or default
    if key == "mirror" and value:
        value = value.rstrip("/")
    return value


def source(key: str) -> str:
    env, _ = _check_key(key)
    if os.environ.get(env):
        return f"environment ({env})"
    return "aq config" if stored(key) else "default"


def set_value(key: str, value: str | None) -> None:
    """Store `value` for `key`; None removes the setting."""
    _check_key(key)
    if key == "mirror" and value and not value.startswith(("http://", "https://", "file://")):
        raise InvalidInput(f"invalid mirror {value!r}", hint="give an http(s):// URL")
    if key == "accel" and value is not None:
        value = value.lower()
        if value not in defaults.ACCELS:
            raise InvalidInput(
                f"unknown accelerator {value!r}", hint=f"use one of {', '.join(defaults.ACCELS)}"
            )
    with writing() as session:
        row = session.get(Setting, key)
        if value is None:
            if row is not None:
                session.delete(row)
        elif row is None:
            session.add(Setting(key=key, value=value))
        else:
            row.value = value
