"""aq new / ls / status / rm / history through the CLI, against a real SQLite file."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from aq import paths
from aq.qemu import img


def test_new_creates_overlay_on_base(aq, base_image) -> None:
    result = aq("new", "guest-1", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["name"] == "guest-1"
    assert data["state"] == "created"
    disk = Path(data["disk_path"])
    assert disk.parent == paths.vm_files("guest-1").root
    chain = img.info(disk, chain=True)
    assert [Path(i["filename"]) for i in chain] == [disk, Path(base_image.path)]
    assert chain[0]["format"] == "qcow2"
    assert data["ssh_port"] >= 2222
    first = int(data["mac"].split(":")[0], 16)
    assert first & 0b10 and not first & 0b01  # locally administered, unicast


def test_new_picks_readable_random_name(aq, base_image) -> None:
    result = aq("new")
    assert result.exit_code == 0, result.stderr
    name = result.stdout.strip()
    assert len(name.split("-")) >= 2
    assert aq("status", name).exit_code == 0


@pytest.mark.parametrize(
    "bad",
    ["../x", "has space", "a" * 64, "UPPER", "-lead", "trail-", "", "dot.name", "x/y", "é"],
)
def test_invalid_names_are_refused_and_change_nothing(aq, base_image, bad) -> None:
    result = aq("new", "--", bad)
    assert result.exit_code == 2
    assert "invalid VM name" in result.stderr
    assert result.stderr.count("\n") == 1  # one line
    assert json.loads(aq("ls", "--json").stdout) == []
    vms = paths.vms_dir()
    assert not vms.exists() or list(vms.iterdir()) == []


def test_valid_edge_names(aq, base_image) -> None:
    for name in ["a", "a" * 63, "x-1-y", "0"]:
        assert aq("new", name).exit_code == 0


def test_name_taken(aq, base_image) -> None:
    assert aq("new", "web").exit_code == 0
    result = aq("new", "web")
    assert result.exit_code == 4
    assert "already exists" in result.stderr and "Hint:" in result.stderr


def test_unknown_vm(aq, base_image) -> None:
    for args in (["status", "nope"], ["rm", "nope"], ["history", "nope"]):
        result = aq(*args)
        assert result.exit_code == 3, args
        assert "nope" in result.stderr


def test_no_traceback_for_errors(aq, base_image) -> None:
    result = aq("status", "nope")
    assert "Traceback" not in result.stderr


def test_ls_table_and_json(aq, base_image) -> None:
    aq("new", "one")
    aq("new", "two", "-p", "8080:80", "-p", "53/udp")
    table = aq("ls").stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "STATE", "SSH"]
    assert [line.split()[0] for line in table[1:]] == ["one", "two"]
    data = json.loads(aq("ls", "--json").stdout)
    assert [d["name"] for d in data] == ["one", "two"]
    two = data[1]
    forwards = {(f["host_port"], f["guest_port"], f["protocol"]) for f in two["forwards"]}
    assert (8080, 80, "tcp") in forwards
    assert any(g == 53 and p == "udp" for _, g, p in forwards)
    assert len({d["mac"] for d in data}) == 2
    assert len({d["ssh_port"] for d in data}) == 2


def test_status_json(aq, base_image) -> None:
    aq("new", "box", "--disk-size", "2G")
    data = json.loads(aq("status", "box", "--json").stdout)
    assert data["disk_size"] == 2 << 30
    assert data["backing_chain"] == [data["disk_path"], base_image.path]
    assert 0 < data["disk_used"] < 1 << 20


def test_disk_smaller_than_base_is_refused(aq, base_image) -> None:
    result = aq("new", "small", "--disk-size", "512M")
    assert result.exit_code == 2
    assert "smaller than the base" in result.stderr
    assert json.loads(aq("ls", "--json").stdout) == []


def test_bad_port_spec_changes_nothing(aq, base_image) -> None:
    for spec in ["abc", "70000:80", "80/sctp", "1.2.3:80:80"]:
        result = aq("new", "p", "-p", spec)
        assert result.exit_code == 2, spec
        assert "port spec" in result.stderr
    assert json.loads(aq("ls", "--json").stdout) == []


def test_port_taken_by_another_vm(aq, base_image) -> None:
    assert aq("new", "a", "-p", "18080:80").exit_code == 0
    result = aq("new", "b", "-p", "18080:80")
    assert result.exit_code == 4
    assert "18080" in result.stderr
    assert [d["name"] for d in json.loads(aq("ls", "--json").stdout)] == ["a"]


def test_rm_removes_files_and_keeps_history(aq, base_image) -> None:
    aq("new", "gone")
    folder = paths.vm_files("gone").root
    assert folder.exists()
    assert aq("rm", "gone").exit_code == 0
    assert not folder.exists()
    assert json.loads(aq("ls", "--json").stdout) == []
    events = json.loads(aq("history", "gone", "--json").stdout)
    assert [(e["event"], e["from_state"], e["to_state"]) for e in events] == [
        ("create", None, "created"),
        ("remove", "created", "removed"),
    ]
    assert all(e["at"].endswith("Z") and "." in e["at"] for e in events)


def test_removed_name_can_be_reused_and_history_shows_both(aq, base_image) -> None:
    aq("new", "again")
    aq("rm", "again")
    assert aq("new", "again").exit_code == 0
    events = json.loads(aq("history", "again", "--json").stdout)
    assert len({e["vm_id"] for e in events}) == 2
    everything = json.loads(aq("history", "--json").stdout)
    assert len(everything) == 3


def test_rm_refuses_running_without_force(aq, base_image) -> None:
    from aq import lifecycle, vm
    from aq.qemu import process
    from aq.store.db import writing

    made = vm.get(json.loads(aq("new", "busy", "--json").stdout)["name"])
    me = process.identity(os.getpid())
    with writing() as session:  # booting, driven by this (live) process
        lifecycle.transition(session, made.id, "start", owner_pid=me.pid, owner_started=me.started)
    result = aq("rm", "busy")
    assert result.exit_code == 5
    assert "booting" in result.stderr and "--force" in result.stderr
    assert paths.vm_files("busy").root.exists()


def test_failed_disk_creation_leaves_nothing(aq, base_image, monkeypatch) -> None:
    from aq.errors import AqError
    from aq.qemu import img as img_module

    def broken(*args, **kwargs):
        raise AqError("qemu-img create failed: simulated")

    monkeypatch.setattr(img_module, "create_overlay", broken)
    result = aq("new", "half")
    assert result.exit_code == 1
    assert json.loads(aq("ls", "--json").stdout) == []
    assert not paths.vm_files("half").root.exists()
    con = sqlite3.connect(paths.db_path())
    assert con.execute("SELECT count(*) FROM events").fetchone() == (0,)


def test_orphan_folder_of_removed_vm_is_replaced(aq, base_image) -> None:
    folder = paths.make_private_dir(paths.vm_files("orphan").root)
    (folder / "disk.qcow2").write_text("left behind by a crash")
    assert aq("new", "orphan").exit_code == 0
    assert img.info(folder / "disk.qcow2")[0]["format"] == "qcow2"


def test_directories_are_private(aq, base_image, aq_home) -> None:
    aq("new", "p")
    for folder in (aq_home, paths.vms_dir(), paths.vm_files("p").root, paths.images_dir()):
        assert folder.stat().st_mode & 0o777 == 0o700, folder


def test_db_command_prints_path(aq, base_image, aq_home) -> None:
    result = aq("db")
    assert result.stdout.strip() == str(aq_home / "aq.db")
    con = sqlite3.connect(result.stdout.strip())
    assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
