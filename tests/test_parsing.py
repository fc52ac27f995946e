"""Pure parsers: names, sizes, port specs."""

from __future__ import annotations

import pytest

from aq.errors import InvalidInput
from aq.names import random_name, validate_name
from aq.netspec import ForwardSpec, parse_forward
from aq.units import format_size, parse_size


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("80", ForwardSpec(80)),
        ("8080:80", ForwardSpec(80, 8080)),
        ("53/udp", ForwardSpec(53, protocol="udp")),
        ("5353:53/udp", ForwardSpec(53, 5353, protocol="udp")),
        ("0.0.0.0:8080:80", ForwardSpec(80, 8080, "0.0.0.0")),
        ("[127.0.0.1]:8080:80/tcp", ForwardSpec(80, 8080)),
    ],
)
def test_parse_forward(spec, expected) -> None:
    assert parse_forward(spec) == expected


@pytest.mark.parametrize(
    "spec", ["", "x", "80:", ":80", "0:80", "80:0", "65536", "1.2.3.4:80", "80/icmp", "a:1:2"]
)
def test_parse_forward_rejects(spec) -> None:
    with pytest.raises(InvalidInput):
        parse_forward(spec)


@pytest.mark.parametrize(
    ("text", "unit", "expected"),
    [
        ("8G", "", 8 << 30),
        ("512M", "", 512 << 20),
        ("2GiB", "", 2 << 30),
        ("1.5G", "", 3 << 29),
        ("4096", "", 4096),
        ("4096", "m", 4096 << 20),
        ("1t", "", 1 << 40),
        ("10k", "", 10240),
    ],
)
def test_parse_size(text, unit, expected) -> None:
    assert parse_size(text, unit) == expected


@pytest.mark.parametrize("text", ["", "G", "-1G", "0", "8X", "1.2.3G"])
def test_parse_size_rejects(text) -> None:
    with pytest.raises(InvalidInput):
        parse_size(text)


def test_format_size() -> None:
    assert [format_size(n) for n in (512, 2048, 1536 << 20, 8 << 30)] == [
        "512B",
        "2K",
        "1.5G",
        "8G",
    ]


def test_random_names_are_valid_labels() -> None:
    for _ in range(50):
        assert validate_name(random_name())
