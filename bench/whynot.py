"""Why not a plain QEMU script, or libvirt? The three side by side: one machine, one run,
one base disk (the bench home's installed Alpine base, read-only under every VM).

For each, from nothing to a usable shell in a new VM made on that base:
  aq       aq new W; aq start W; aq exec W -- uname -a
  QEMU     qemu-img create (an overlay on the base); qemu-system-x86_64 with the original
           notes' kind of command line (virtio disk and NIC, user network, the serial port
           on a unix socket); connect to the socket, log in as root, run the command
  libvirt  qemu-img create; virsh define W.xml (a domain file the user writes); virsh
           start W; on the console, log in as root, run the command
and then the disk the new VM takes (every file made for it, in allocated blocks) and
what a user types. All three boot under TCG, one vCPU, 1 GiB (this host's KVM cannot
run guests), through the firmware and the base's own bootloader (a new aq VM has no
copy of its kernel yet, so aq boots that way too). libvirt's serial port is a unix
socket here so the login can be scripted; a user would type `virsh console W`.

Needs libvirt for its row: Debian `apt install libvirt-daemon-system libvirt-clients`;
without systemd start `virtlogd -d` and `libvirtd -d` as root. Without it the row says
why and the others still run.

Run: .venv/bin/python bench/whynot.py   (three TCG boots: several minutes)
"""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.boot import cpu_seconds
from bench.testvm import aq, environment

TIMEOUT = 900.0
MEMORY_MIB = 1024
LIBVIRT = "qemu:///system"
COMMAND = "uname -a"


@dataclass
class Row:
    tool: str
    seconds: float | None = None
    cpu: float | None = None  # QEMU's CPU seconds by then: steadier on a loaded host
    disk: int | None = None
    typed: list[str] = field(default_factory=list)
    note: str = ""


def allocated(*paths: Path) -> int:
    """Bytes actually allocated on disk by these files and folders (not apparent size)."""
    total = 0
    for path in paths:
        if path.is_dir():
            total += sum(p.lstat().st_blocks * 512 for p in path.rglob("*"))
        elif path.exists():
            total += path.lstat().st_blocks * 512
    return total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def overlay(base: Path, disk: Path) -> list[str]:
    argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(disk)]
    subprocess.run(argv, check=True)
    return argv


def shell_on_console(sock: Path, transcript: Path) -> str:
    """Log in as root on a serial console socket and run COMMAND; its output."""
    from aq.console.expect import Console

    with Console.connect(sock, transcript, timeout=60) as console:
        console.login(TIMEOUT)
        return console.check(COMMAND, 60, "run a command")


def run_aq(name: str) -> Row:
    from aq import paths

    row = Row("aq")
    aq("rm", name, "--force", check=False)
    start = time.perf_counter()
    steps = [("new", name, "--cpus", "1"), ("start", name), ("exec", name, "--", *COMMAND.split())]
    for step in steps:
        done = aq(*step, check=False)
        if done.returncode != 0:
            row.note = f"aq {step[0]} failed: {done.stderr.strip()[-200:]}"
            return row
    row.seconds = time.perf_counter() - start
    row.cpu = cpu_seconds(int(paths.vm_files(name).pidfile.read_text().split()[0]))
    row.disk = allocated(paths.vm_files(name).root)
    row.typed = [shlex.join(["aq", *s]) for s in steps]
    aq("rm", name, "--force", check=False)
    return row


def qemu_argv(disk: Path, serial: Path, ssh_port: int) -> list[str]:
    """The original notes' line, for this host: x86_64, TCG instead of hvf, SeaBIOS."""
    from aq.qemu.hostinfo import qemu_binary

    return [
        qemu_binary("x86_64"),
        *("-machine", "pc", "-accel", "tcg", "-m", "1G"),
        *("-drive", f"if=virtio,file={disk}"),
        *("-device", "virtio-net-pci,netdev=net0"),
        *("-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22"),
        *("-rtc", "base=utc,clock=host"),
        *("-display", "none", "-monitor", "none"),
        *("-serial", f"unix:{serial},server=on,wait=off"),
    ]


def run_qemu(base: Path, tmp: Path) -> Row:
    row = Row("QEMU script")
    disk, serial = tmp / "plain.qcow2", tmp / "app.sock"
    start = time.perf_counter()
    typed = [shlex.join(overlay(base, disk))]
    argv = qemu_argv(disk, serial, free_port())
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        shell_on_console(serial, tmp / "plain.transcript")
        row.seconds = time.perf_counter() - start
        row.cpu = cpu_seconds(proc.pid)
        row.disk = allocated(disk)
    except Exception as err:  # the row says why; the other rows still run
        row.note = f"{type(err).__name__}: {str(err)[:200]}"
    finally:
        proc.kill()
        proc.wait(30)
    row.typed = [*typed, shlex.join(argv), f"nc -U {serial.name}", "root", COMMAND]
    return row


def domain_xml(name: str, disk: Path, serial: Path) -> str:
    # QEMU runs as root for this domain (static DAC label), so it can read the base
    # where aq keeps it (a private folder) without changing the host's libvirt setup.
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{MEMORY_MIB}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <features><acpi/></features>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='user'><model type='virtio'/></interface>
    <serial type='unix'>
      <source mode='bind' path='{serial}'/>
      <target port='0'/>
    </serial>
  </devices>
  <seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>
</domain>
"""


def virsh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["virsh", "-c", LIBVIRT, *args], capture_output=True, text=True, check=check, timeout=120
    )


def run_libvirt(base: Path, tmp: Path, name: str) -> Row:
    row = Row("libvirt (virsh)")
    if shutil.which("virsh") is None:
        row.note = "virsh not installed (apt install libvirt-daemon-system libvirt-clients)"
        return row
    try:
        virsh("version")
    except subprocess.CalledProcessError as err:
        row.note = f"libvirt not reachable ({err.stderr.strip()[:120]}); start libvirtd"
        return row
    virsh("destroy", name, check=False)
    virsh("undefine", name, check=False)
    disk, serial, xml = tmp / f"{name}.qcow2", tmp / "console.sock", tmp / f"{name}.xml"
    start = time.perf_counter()
    typed = [shlex.join(overlay(base, disk))]
    xml.write_text(domain_xml(name, disk, serial))
    try:
        virsh("define", str(xml))
        virsh("start", name)
        shell_on_console(serial, tmp / "libvirt.transcript")
        row.seconds = time.perf_counter() - start
        row.cpu = cpu_seconds(int(Path(f"/run/libvirt/qemu/{name}.pid").read_text()))
        made = [
            disk,
            Path(f"/etc/libvirt/qemu/{name}.xml"),
            Path(f"/var/log/libvirt/qemu/{name}.log"),
        ]
        row.disk = allocated(*made)
    except Exception as err:  # the row says why; the other rows still run
        detail = getattr(err, "stderr", None) or str(err)
        row.note = f"{type(err).__name__}: {str(detail).strip()[:200]}"
    finally:
        virsh("destroy", name, check=False)
        virsh("undefine", name, check=False)
    lines = len(xml.read_text().splitlines())
    row.typed = [
        *typed,
        f"$EDITOR {xml.name}   # a {lines}-line domain XML",
        f"virsh define {xml.name}",
        f"virsh start {name}",
        f"virsh console {name}",
        "root",
        COMMAND,
    ]
    return row


def size_text(size: int | None) -> str:
    return "-" if size is None else f"{size / (1 << 20):.1f} MiB"


def report(rows: list[Row], base: Path) -> None:
    print(f"\nbase disk (shared, read-only): {size_text(allocated(base))} ({base.name})")
    print(
        "| tool | time to a usable shell (QEMU CPU s) | disk per extra VM | commands typed "
        "| words typed |"
    )
    print("|---|---|---|---|---|")
    for row in rows:
        took = "-" if row.seconds is None else f"{row.seconds:.1f} s ({row.cpu:.1f})"
        words = sum(len(shlex.split(line.split("   #")[0])) for line in row.typed)
        print(f"| {row.tool} | {took} | {size_text(row.disk)} | {len(row.typed)} | {words} |")
    for row in rows:
        print(f"\n{row.tool}:" + (f" ({row.note})" if row.note else ""))
        for line in row.typed:
            print(f"  $ {line}")


def main() -> int:
    with environment():
        from aq.images.base import current_base

        aq("images", "pull")  # the base, installed once (minutes the first time)
        found = current_base()
        assert found is not None, "no base installed"
        base = Path(found.path)
        with tempfile.TemporaryDirectory(prefix="aq-whynot-") as name:
            tmp = Path(name)
            tmp.chmod(0o755)
            rows = [
                run_aq("bench-whynot"),
                run_qemu(base, tmp),
                run_libvirt(base, tmp, "aq-whynot"),
            ]
        report(rows, base)
    return 0 if all(r.seconds is not None for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
