"""Issue 11, end to end under TCG: a live snapshot of the shared VM, two clones resumed
at once (each with its own identity), suspend/resume, and a saved state that can no
longer be used booting cold with its reason in the history. One cold boot in all."""

from __future__ import annotations

import subprocess
import time

import pytest

from aq.console.expect import transcript_tail

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1800)]

TAG = "e2e-live"
CLONES = ("twin-1", "twin-2")


def _details(home, name: str) -> list[str]:
    return [f"{e['event']}: {e['detail'] or ''}" for e in home.json("history", name)]


@pytest.fixture(scope="module")
def twins(installed, shared_vm):
    """Files written on disk and in /dev/shm, a live snapshot, two clones started at once."""
    installed.sh(shared_vm, "echo on-disk > /root/before; echo in-ram > /dev/shm/before; sync")
    made = installed.json("snapshot", "create", shared_vm, TAG)
    assert made["memory"] is True and made["used_by"] == [shared_vm]
    installed.aq("new", "twin", "--from", TAG, "--count", "2")
    try:
        starts = [
            installed.popen("start", name, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for name in CLONES
        ]
        for name, proc in zip(CLONES, starts, strict=True):
            _, err = proc.communicate(timeout=900)
            # The clone's console, kept in the message (read only on a failure, before
            # the cleanup removes the clone).
            log = installed.path / "vms" / name / "console.log"
            assert proc.returncode == 0, (err, transcript_tail(log, 40))
        yield CLONES
    finally:
        for name in CLONES:
            installed.aq("stop", name, "--force", check=False)
            installed.aq("rm", name, check=False)


def test_the_source_keeps_running_after_a_live_snapshot(installed, shared_vm, twins) -> None:
    assert installed.json("status", shared_vm)["state"] == "running"
    assert installed.aq("exec", shared_vm, "--", "cat", "/dev/shm/before").stdout == "in-ram\n"
    listed = {row["tag"]: row for row in installed.json("snapshot", "ls")}
    assert set(listed[TAG]["used_by"]) == {shared_vm, *CLONES}
    assert installed.aq("snapshot", "rm", TAG, check=False).returncode == 4


def test_clones_resume_with_the_files_and_their_own_identity(installed, twins) -> None:
    seen = {}
    for name in twins:
        script = (
            "cat /root/before /dev/shm/before; hostname; cat /sys/class/net/eth0/address; "
            "cat /etc/ssh/ssh_host_ed25519_key.pub; cat /etc/machine-id"
        )
        lines = installed.sh(name, script).stdout.splitlines()
        assert lines[:2] == ["on-disk", "in-ram"]
        status = installed.json("status", name)
        assert lines[2] == name
        assert lines[3] == status["mac"]
        assert lines[4].split()[:2] == status["ssh_host_key"].split()[:2]
        seen[name] = lines[2:]
        resumed = [d for d in _details(installed, name) if "resumed from a live snapshot" in d]
        # The clone ran aq.reseed: its kernel's RNG no longer follows its source's.
        assert resumed and "; new identity; RNG reseeded;" in resumed[-1], resumed
    first, second = seen.values()
    assert first[0] != second[0]  # hostname
    assert first[1] != second[1]  # the MAC the guest sees
    assert first[2] != second[2]  # SSH host key
    assert first[3] != second[3]  # machine-id


def test_suspend_then_start_keeps_dev_shm(installed, twins) -> None:
    name = twins[0]
    installed.sh(name, "echo suspended > /dev/shm/kept")
    installed.aq("suspend", name)
    assert installed.json("status", name)["state"] == "stopped"
    assert (installed.path / "vms" / name / "saved.state").exists()
    time.sleep(20)  # the saved guest's clock stands still meanwhile
    installed.aq("start", name)
    assert installed.aq("exec", name, "--", "cat", "/dev/shm/kept").stdout == "suspended\n"
    guest_now = int(installed.aq("exec", name, "--", "date", "+%s").stdout)
    assert abs(guest_now - time.time()) < 10  # set to now at the resume
    details = _details(installed, name)
    assert details[-1].startswith("ready: resumed; guest ready in"), details
    assert details[-2].startswith("start: accel ") and details[-2].endswith("; resumed"), details
    assert not (installed.path / "vms" / name / "saved.state").exists()


def test_unusable_saved_state_boots_cold_and_says_why(installed, twins) -> None:
    name = twins[1]
    installed.sh(name, "echo gone-after-cold-boot > /dev/shm/lost")
    installed.aq("suspend", name)
    with installed.db() as con:
        con.execute(
            "UPDATE saved_states SET machine = 'pc-q35-2.4' WHERE vm_id = "
            "(SELECT id FROM vms WHERE name = ? AND state != 'removed')",
            (name,),
        )
    installed.aq("start", name, "--timeout", "900")
    details = _details(installed, name)
    assert any(
        d.startswith("saved-state: cold boot (saved state discarded: it needs machine type ")
        for d in details
    ), details
    assert "resumed" not in details[-1]
    probe = installed.sh(name, "cat /dev/shm/lost", check=False)
    assert probe.returncode != 0
    assert not (installed.path / "vms" / name / "saved.state").exists()
