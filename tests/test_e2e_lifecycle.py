"""Issue 5, end to end with the test guest under TCG: start, readiness, stop, crash
reconciliation, ports and MACs."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
import urllib.request
from dataclasses import replace

import pytest

from aq import bootcopy
from aq.paths import EXEC_STREAMS as STREAMS
from aq.paths import VmFiles
from aq.qemu import process
from tests.conftest import VM_CPUS

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1800)]


def _events(home, name: str) -> list[tuple[str, str, str]]:
    return [(e["event"], e["to_state"], e["detail"] or "") for e in home.json("history", name)]


def _qemu(home, name: str) -> process.Identity:
    pid, started = (
        home.db()
        .execute("SELECT pid, pid_started FROM vms WHERE name = ? AND state != 'removed'", (name,))
        .fetchone()
    )
    return process.Identity(pid, started)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The guest's /dev after a direct boot, for the firmware boot to be compared with.
_DEV: dict[str, list[str]] = {}


def _dev_nodes(home, name: str) -> list[str]:
    """Every node and link under the guest's /dev with its type, mode, owner, group,
    device numbers and target; not the mounts that hold sessions (pts, shm, mqueue),
    nor the command ports, which aq plugs in while the guest boots."""
    listing = home.sh(
        name,
        "find /dev \\( -path /dev/pts -o -path /dev/shm -o -path /dev/mqueue \\) -prune"
        " -o ! -name 'vport*' ! -path '/dev/virtio-ports/*' -print"
        " | sort | xargs stat -c '%N %A %U:%G %t:%T'",
    ).stdout.splitlines()
    # mdev's rules, not devtmpfs's defaults (root:root 0600), own the disk.
    assert len(listing) > 50 and "/dev/vda brw-rw---- root:disk fd:0" in listing
    return listing


@pytest.fixture(scope="module")
def persist(installed):
    """A VM that is started, stopped, crashed and restarted by the tests below, in order."""
    name = "persist"
    installed.aq("new", name, "--cpus", VM_CPUS, "--disk-size", "3G")
    yield name
    installed.aq("rm", name, "--force", check=False)


def test_start_runs_commands_and_shows_status(installed, persist) -> None:
    result = installed.aq("start", persist, "--timeout", "600")
    assert "running" in result.stderr
    out = installed.aq("exec", persist, "--", "uname", "-sr").stdout
    assert out.startswith("Linux ")
    status = installed.json("status", persist)
    assert status["state"] == "running" and status["accel"] == "tcg"
    assert status["guest"] == "running"
    assert status["uptime_s"] > 0 and status["pid"]
    # Under TCG the CPU has no SVM, so the guest loads no kvm modules at each boot.
    assert installed.sh(persist, "grep -cw svm /proc/cpuinfo; true").stdout.split() == ["0"]
    hostname = installed.aq("exec", persist, "--", "hostname").stdout.strip()
    assert hostname == persist  # each VM made from the base is itself
    # dhcpcd does not ARP-probe its lease on QEMU's user network (5 s of every boot),
    # nor wait a random time before asking for it (0-1 s).
    options = installed.sh(persist, "grep -x -e noarp -e nodelay /etc/dhcpcd.conf").stdout
    assert options.split() == ["noarp", "nodelay"]
    # No gettys on the virtual consoles, which nobody can see (no display): the serial
    # console's is the only one.
    gettys = installed.sh(persist, "ps -o args | grep '^/sbin/getty' || true").stdout
    assert [line.split()[-2:] for line in gettys.splitlines()] == [["ttyS0", "vt100"]]
    events = _events(installed, persist)
    assert [e[:2] for e in events[-2:]] == [("start", "booting"), ("ready", "running")]
    # A new VM boots its base's kernel directly from its first start: the install kept
    # a copy of what the base's bootloader boots (aq.images.basekernel, aq.bootcopy).
    assert "direct kernel boot" in events[-2][2]
    # Through the kernel's PVH entry: the copy keeps it unpacked (aq.pvh), so the guest
    # does not unpack itself first.
    assert "direct kernel boot (PVH entry)" in events[-2][2]
    # Its sysinit runs mdev, as setup-alpine's does, so the initramfs's own device
    # helper only handled partitions (aq.coldplug), and sysinit's mdev made the rest
    # of /dev: its rules gave each command port a link (compared with a firmware boot
    # below).
    assert "initramfs device helper for partitions only" in events[-2][2]
    _DEV["direct"] = _dev_nodes(installed, persist)
    # Partitions still went through mdev in the initramfs (for x86-64 guests the
    # helper is a small static program): only there can their by-partuuid links be made.
    partuuid = [n for n in _DEV["direct"] if n.startswith("'/dev/disk/by-partuuid/")]
    assert len(partuuid) == 3 and all("-> '../../vda" in n for n in partuuid)
    links = installed.sh(persist, "ls /dev/virtio-ports").stdout.split()
    assert "aq.exec.0.ctl" in links
    # The boot's duration is in the history and in status (aq.boottime).
    assert re.fullmatch(r"guest ready in \d+\.\d s \(QEMU pid \d+\)", events[-1][2])
    # Seven of the eight command slots were plugged in once it was ready (aq.qemu.hotplug).
    ports = installed.sh(persist, "cat /sys/class/virtio-ports/*/name").stdout.split()
    assert sorted(ports) == sorted(f"aq.exec.{n}.{s}" for n in range(8) for s in STREAMS)
    assert 0 < status["last_boot_s"] == float(events[-1][2].split()[3])


def test_root_filesystem_fills_the_bigger_disk(installed, persist) -> None:
    script = (
        "cat /sys/class/block/vda/size /sys/class/block/vda3/start /sys/class/block/vda3/size;"
        "df -k / | tail -n 1"
    )
    lines = installed.sh(persist, script).stdout.splitlines()
    disk, start, size = (int(x) for x in lines[:3])
    assert disk * 512 == 3 << 30  # --disk-size 3G (the base is 2G)
    # The root partition reaches the end of the disk (growpart keeps a few sectors).
    assert 0 <= disk - (start + size) < 2048
    fs_kib = int(lines[3].split()[1])
    assert fs_kib * 1024 > 0.95 * size * 512  # and the filesystem fills the partition


def test_start_when_running_changes_nothing(installed, persist) -> None:
    before = len(installed.json("history", persist))
    result = installed.aq("start", persist)
    assert "already running" in result.stderr
    assert len(installed.json("history", persist)) == before


def test_port_forward_reaches_a_listener_in_the_guest(installed, shared_vm) -> None:
    # Alpine's busybox has no httpd applet (that is busybox-extras); nc serves replies.
    # The script reads the request up to its blank line first: a socket closed with
    # unread bytes sends a reset, which can overtake the reply on its way out through
    # QEMU's user network (once seen as an empty body).
    reply = (
        "#!/bin/sh\n"
        'while read -r line && [ "${#line}" -gt 1 ]; do :; done\n'
        'printf "HTTP/1.0 200 OK\\r\\n\\r\\nhello-from-guest\\n"\n'
    )
    installed.sh(shared_vm, "cat > /root/reply; chmod +x /root/reply", input=reply)
    installed.sh(
        shared_vm,
        "setsid nc -lk -p 8080 -e /root/reply </dev/null >/dev/null 2>&1 &",
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            port = installed.notes["shared_http_port"]
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read()
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(1)
    assert body == b"hello-from-guest\n"


def test_two_vms_run_at_once_with_distinct_macs_and_ports(installed, persist, shared_vm) -> None:
    running = {v["name"]: v for v in installed.json("ls") if v["state"] == "running"}
    assert {persist, shared_vm} <= set(running)
    assert len({v["mac"] for v in running.values()}) == len(running)
    assert len({v["ssh_port"] for v in running.values()}) == len(running)
    macs = {
        name: installed.aq("exec", name, "--", "cat", "/sys/class/net/eth0/address").stdout.strip()
        for name in (persist, shared_vm)
    }
    assert macs[persist] != macs[shared_vm]
    assert macs == {name: running[name]["mac"] for name in macs}


def test_data_survives_clean_stop_and_start(installed, persist) -> None:
    installed.sh(persist, "echo kept > /root/data && sync")
    # A changed kernel command line in the guest's bootloader takes effect at the next
    # start, which boots the guest's own kernel directly (aq.bootcopy).
    installed.sh(persist, "sed -i 's/^\\( *APPEND .*\\)$/\\1 aq_probe=1/' /boot/extlinux.conf")
    log = installed.path / "vms" / persist / "console.log"
    offset = log.stat().st_size
    result = installed.aq("stop", persist)
    assert "stopped" in result.stderr
    event, state, detail = _events(installed, persist)[-1]
    assert (event, state) == ("halt", "stopped")
    assert "ACPI power button pressed; guest powered off" in detail
    # Its copy came from the base (aq new): the files are the same, the command line new.
    assert "kernel copy current (unchanged; new command line" in detail
    shutdown = log.read_bytes()[offset:]
    assert b"Unmounting filesystems" in shutdown and b"Power down" in shutdown
    again = installed.aq("stop", persist)
    assert "already stopped" in again.stderr
    installed.aq("start", persist, "--timeout", "600")
    assert "direct kernel boot" in _events(installed, persist)[-2][2]
    assert "aq_probe=1" in installed.aq("exec", persist, "--", "cat", "/proc/cmdline").stdout
    assert installed.aq("exec", persist, "--", "cat", "/root/data").stdout == "kept\n"
    dmesg = installed.aq("exec", persist, "--", "dmesg").stdout
    assert "recovery complete" not in dmesg  # the journal was clean: unmounted cleanly
    # That stop recorded the guest's stat of its boot files. A file written since
    # (zeros after the archives, which the kernel skips) reads differently: fetched.
    installed.sh(persist, "head -c 512 /dev/zero >> /boot/initramfs-virt")
    installed.aq("stop", persist)
    assert "kernel copy current (fetched initramfs," in _events(installed, persist)[-1][2]
    installed.aq("start", persist, "--timeout", "600")
    assert "direct kernel boot" in _events(installed, persist)[-2][2]


def test_kill_9_of_qemu_is_recorded_as_crashed_then_two_starts_boot_it_once(
    installed, persist
) -> None:
    qemu = _qemu(installed, persist)
    os.kill(qemu.pid, signal.SIGKILL)
    assert process.wait_gone(qemu, 30)
    listed = {v["name"]: v for v in installed.json("ls")}
    assert listed[persist]["state"] == "stopped"
    event, state, detail = _events(installed, persist)[-1]
    assert (event, state) == ("crash", "stopped") and "crashed" in detail
    # It starts again; two processes starting it at once boot it once.
    procs = [
        installed.popen("start", persist, "--timeout", "600", stderr=-1, text=True)
        for _ in range(2)
    ]
    codes = sorted(p.wait(timeout=900) for p in procs)
    assert codes[0] == 0
    assert codes[1] in (0, 5)  # the loser finds it booting (5) or already running (0)
    after_crash = [e for e in installed.json("history", persist) if e["event"] != "create"]
    starts = [e for e in after_crash[-3:] if e["event"] == "start"]
    assert len(starts) == 1
    # After a crash the copy of its kernel may be stale: the firmware boots it, and the
    # bootloader still gives it the command line changed in the test before.
    assert "firmware boot (kernel copy stale: the last stop was not a clean" in starts[0]["detail"]
    assert "aq_probe=1" in installed.aq("exec", persist, "--", "cat", "/proc/cmdline").stdout
    # The firmware ran the initramfs's own device helper for every device; the direct
    # boot before only for partitions. The guest's device nodes, owners, modes and
    # links are the same either way.
    assert _dev_nodes(installed, persist) == _DEV["direct"]
    assert installed.aq("exec", persist, "--", "cat", "/root/data").stdout == "kept\n"


def test_guest_kernel_panic_is_reported_and_stop_falls_back(installed, persist) -> None:
    # The guest dies mid-command, so the exec is bounded by its own --timeout.
    installed.sh(
        persist,
        "echo c > /proc/sysrq-trigger",
        "--timeout",
        "5",
        check=False,
    )
    deadline = time.monotonic() + 120
    while installed.json("status", persist)["guest"] != "guest-panicked":
        assert time.monotonic() < deadline, "the panic was not reported"
        time.sleep(1)
    assert "panicked" in installed.aq("status", persist).stdout
    installed.aq("stop", persist, "--timeout", "5")
    detail = _events(installed, persist)[-1][2]
    assert "no power-off within 5s" in detail and "fallback: QMP quit" in detail


def test_a_kernel_panic_early_in_boot_fails_the_start_at_once(installed) -> None:
    # A kernel that cannot mount its root panics before the guest's pvpanic driver is
    # loaded, so QEMU learns nothing: the console is the only witness. `rdinit` naming
    # no file sends this kernel past its initramfs, where `root=UUID=` means nothing.
    installed.aq("new", "panicky", "--cpus", VM_CPUS)
    try:
        folder = VmFiles(installed.path / "vms" / "panicky").boot_copy
        copy = bootcopy.read_record(folder)
        assert copy is not None and copy.current  # a new VM boots its base's kernel directly
        bootcopy.write_record(folder, replace(copy, append=f"{copy.append} rdinit=/nonexistent"))
        began = time.monotonic()
        result = installed.aq("start", "panicky", "--timeout", "900", check=False)
        took = time.monotonic() - began
        assert result.returncode == 1, result.stderr
        assert "the guest's kernel panicked during boot: VFS: Unable to mount root fs" in (
            result.stderr
        )
        assert took < 450, f"the start took {took:.0f}s: the panic went unnoticed"
        event, state, detail = _events(installed, "panicky")[-1]
        assert (event, state) == ("abort", "stopped")
        assert detail.startswith("the guest's kernel panicked during boot")
        pidfile = installed.path / "vms" / "panicky" / "qemu.pid"
        assert process.from_pidfile(pidfile) is None  # no QEMU outlived the boot
    finally:
        installed.aq("rm", "--force", "panicky", check=False)


def test_killed_aq_start_leaves_nothing_stuck_in_booting(installed) -> None:
    installed.aq("new", "orphaned", "--cpus", VM_CPUS)
    try:
        proc = installed.popen("start", "orphaned", "--timeout", "600", stderr=-1)
        pidfile = installed.path / "vms" / "orphaned" / "qemu.pid"
        deadline = time.monotonic() + 120
        while not pidfile.exists():
            assert time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(1)
        proc.kill()
        proc.wait()
        qemu = _qemu(installed, "orphaned")
        listed = {v["name"]: v["state"] for v in installed.json("ls")}
        assert listed["orphaned"] == "stopped"
        assert _events(installed, "orphaned")[-1][:2] == ("abort", "stopped")
        assert "interrupted" in _events(installed, "orphaned")[-1][2]
        assert process.wait_gone(qemu, 30)  # its QEMU did not outlive the boot
    finally:
        installed.aq("rm", "--force", "orphaned", check=False)


def test_port_held_by_another_program_is_named(installed) -> None:
    port = _free_port()
    installed.aq("new", "busy-port", "--cpus", VM_CPUS, "-p", f"{port}:80")
    holder = socket.socket()
    holder.bind(("127.0.0.1", port))
    holder.listen()
    try:
        result = installed.aq("start", "busy-port", check=False)
        assert result.returncode == 4
        assert str(port) in result.stderr
        assert installed.json("status", "busy-port")["state"] == "created"
    finally:
        holder.close()
        installed.aq("rm", "busy-port", check=False)


def test_auto_port_taken_is_repicked(installed) -> None:
    made = installed.json("new", "repick", "--cpus", VM_CPUS)
    ssh = made["ssh_port"]
    holder = socket.socket()
    holder.bind(("127.0.0.1", ssh))
    holder.listen()
    try:
        installed.aq("start", "repick", "--no-wait")
        now = installed.json("status", "repick")["ssh_port"]
        assert now != ssh
        assert f"port {ssh} was taken" in _events(installed, "repick")[-2][2]
    finally:
        holder.close()
        installed.aq("rm", "--force", "repick", check=False)
