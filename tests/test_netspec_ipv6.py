"""`-p ADDR:HOST:GUEST` takes IPv4 host addresses only.

QEMU 7.2 refuses an IPv6 hostfwd address at start (`-netdev user,hostfwd=tcp:[::1]:
12345-:22` exits with "Invalid host forwarding rule ... (Bad host address)"), so aq says
so when the spec is parsed, before anything is recorded.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aq.errors import InvalidInput
from aq.netspec import parse_forward
from tests.conftest import aq_process


@pytest.mark.parametrize(
    "spec",
    [
        "[::1]:8080:80",
        "[::]:8080:80",
        "[::1]:8080:80/udp",
        "[fe80::1]:2222:22",
        "[::ffff:127.0.0.1]:8080:80",
        "[2001:db8::1]:443:443/tcp",
    ],
)
def test_ipv6_host_addresses_are_refused(spec: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_forward(spec)
    line = caught.value.one_line()
    assert "IPv4" in line and "127.0.0.1" in line and "0.0.0.0" in line
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("spec", "addr"),
    [
        ("127.0.0.1:8080:80", "127.0.0.1"),
        ("[127.0.0.1]:8080:80", "127.0.0.1"),
        ("0.0.0.0:8080:80", "0.0.0.0"),
        ("192.168.1.10:53:53/udp", "192.168.1.10"),
    ],
)
def test_ipv4_host_addresses_still_work(spec: str, addr: str) -> None:
    assert parse_forward(spec).host_addr == addr


def test_aq_new_refuses_an_ipv6_forward_and_records_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"AQ_HOME": str(home), "AQ_MIRROR": "http://127.0.0.1:9/x"}
    proc = aq_process("new", "-p", "[::1]:8080:80", "v6", env=env)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert err.startswith("Error: ") and "Hint: use 127.0.0.1" in err and len(err.splitlines()) == 1
    listed = aq_process("ls", "--json", env=env)
    assert listed.communicate(timeout=120)[0].strip() == "[]"
