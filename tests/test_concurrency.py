"""Many aq processes at once against one database: no collisions, no lock errors."""

from __future__ import annotations

import json

import pytest

from tests.conftest import aq_process

pytestmark = pytest.mark.timeout(240)


def test_sixteen_concurrent_new_all_succeed(aq, base_image) -> None:
    procs = [aq_process("new", "--json") for _ in range(16)]
    outputs = [proc.communicate(timeout=200) for proc in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert "locked" not in err
    made = [json.loads(out) for out, _ in outputs]
    assert len({m["name"] for m in made}) == 16
    assert len({m["mac"] for m in made}) == 16
    assert len({m["ssh_port"] for m in made}) == 16
    listed = json.loads(aq("ls", "--json").stdout)
    assert len(listed) == 16


def test_sixteen_concurrent_new_same_name_one_wins(aq, base_image) -> None:
    procs = [aq_process("new", "same") for _ in range(16)]
    codes = [proc.wait(timeout=200) for proc in procs]
    errors = [proc.stderr.read() for proc in procs]
    assert sorted(codes) == [0] + [4] * 15, errors
    assert all("locked" not in e for e in errors)
    assert [d["name"] for d in json.loads(aq("ls", "--json").stdout)] == ["same"]


def test_concurrent_first_use_migrates_once(aq_home) -> None:
    procs = [aq_process("ls", "--json") for _ in range(8)]
    for proc in procs:
        out, err = proc.communicate(timeout=200)
        assert proc.returncode == 0, err
        assert json.loads(out) == []
