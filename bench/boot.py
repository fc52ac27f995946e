"""Cold `aq start` to ready, against a stock QEMU command line booting the same disk.

One run, the same disk: first `aq start` (cold: QEMU not running; until it returns,
the guest answering on the command channel), then a stock QEMU line
(`-accel tcg -m 1024 -smp 1`, one virtio disk, one virtio NIC, the serial port to a
file, none of aq's devices) booting a throwaway overlay of that VM's disk through the
firmware until its login prompt. Prints both durations, their ratio (target <= 0.5),
the same ratio in QEMU CPU seconds (a TCG boot is CPU-bound, so this one holds on a
loaded host), and a boot timeline for each: console lines with their arrival time
since the start, so the next stall shows at a glance.

Run: .venv/bin/python bench/boot.py            (TCG: a few minutes)
     .venv/bin/python bench/boot.py --rounds 3  (alternating; medians, for a noisy host)
     .venv/bin/python bench/boot.py --rounds 5 --together  (both boots at once, one core
       each: a shared host's changing speed then slows both alike; needs 2+ cores)
     .venv/bin/python bench/boot.py --stock-only --ports 24 --smp 2 --cpu max
       (experiments: the stock line plus N virtio-serial ports, other vCPUs or CPU model)
"""

from __future__ import annotations

import argparse
import functools
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aq.console.expect import LOGIN
from bench.testvm import aq, ensure_vm, environment

NAME = "bench-boot"
TIMEOUT = 600.0
GAP = 2.0  # seconds of console silence worth showing in the timeline


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far: a TCG boot is CPU-bound, so this is
    what the boot costs even when other work on a shared host stretches its wall time."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Timeline:
    """Console lines from a growing log file, each stamped with its arrival time."""

    def __init__(self, log: Path, start: float, offset: int = 0, pid=None) -> None:
        self.log, self.start, self.offset = log, start, offset
        self.pid = pid  # QEMU's pid, or a callable giving it once known: CPU per line
        self.partial = b""
        self.began: float | None = None  # when the partial line's first byte came
        self.lines: list[tuple[float, float, str, float | None]] = []  # began, ended, text, cpu
        self.seen = b""
        self.login_at: float | None = None  # when a login prompt first showed
        self.cpu: float | None = None  # QEMU's CPU seconds at the end

    def poll(self) -> None:
        try:
            with self.log.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return
        if not data:
            return
        self.offset += len(data)
        self.seen += data
        now = time.perf_counter() - self.start
        if self.login_at is None and LOGIN.search(self.seen):
            self.login_at = now
        *complete, self.partial = (self.partial + data).split(b"\n")
        cpu = self._cpu() if complete else None
        for raw in complete:
            text = raw.decode(errors="replace").replace("\r", "").strip()
            text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
            if text:
                self.lines.append((now if self.began is None else self.began, now, text, cpu))
            self.began = None
        if self.partial.strip() and self.began is None:
            self.began = now

    def _cpu(self) -> float | None:
        try:
            pid = self.pid() if callable(self.pid) else self.pid
            return cpu_seconds(pid) if pid else None
        except (OSError, ValueError, IndexError):
            return None

    def show(self, title: str, every: bool = False) -> None:
        """Lines after a gap > GAP s or taking > GAP s to finish (and the first and last).

        A line is stamped when its first byte came; OpenRC prints "* Doing X ..." first
        and "[ ok ]" when X is done, so a slow step shows as a line that took long.
        """
        print(f"-- timeline: {title} (s since start; +gap before the line; line took; QEMU CPU s)")
        last = 0.0
        for index, (began, ended, text, cpu) in enumerate(self.lines):
            gap, took = began - last, ended - began
            if every or gap > GAP or took > GAP or index in (0, len(self.lines) - 1):
                mark = f"+{gap:5.1f}" if gap > GAP else "      "
                slow = f"{took:5.1f}" if took > GAP else "     "
                used = f"{cpu:6.1f}" if cpu is not None else "      "
                print(f"{began:7.1f} {mark} {slow} {used}  {text[:84]}")
            last = ended


def stock_argv(
    binary: str,
    disk: Path,
    serial: Path,
    ports: int,
    smp: int,
    cpu: str | None,
    extra=(),
    accel: str = "tcg",
):
    argv = [binary, "-machine", "pc", "-accel", accel, "-m", "1024", "-smp", str(smp)]
    if cpu:
        argv += ["-cpu", cpu]
    argv += ["-display", "none", "-monitor", "none", "-parallel", "none"]
    argv += ["-drive", f"if=none,id=d0,file={disk},format=qcow2"]
    argv += ["-device", "virtio-blk-pci,drive=d0"]
    argv += ["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"]
    argv += ["-serial", f"file:{serial}"]
    if ports:
        argv += ["-device", "virtio-serial-pci,id=vser0,max_ports=31"]
        for port in range(ports):
            argv += ["-chardev", f"null,id=p{port}"]
            argv += ["-device", f"virtserialport,bus=vser0.0,chardev=p{port},name=p.{port}"]
    return [*argv, *extra]


def stock_boot(
    disk: Path, ports: int = 0, smp: int = 1, cpu: str | None = None, extra=(), accel: str = "tcg"
) -> Timeline:
    """Boot an overlay of `disk` with the stock line until login; the QEMU is killed."""
    from aq.qemu.hostinfo import qemu_binary

    with tempfile.TemporaryDirectory(prefix="aq-bench-boot-") as tmp:
        overlay, serial = Path(tmp) / "overlay.qcow2", Path(tmp) / "serial.log"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(disk), "-F", "qcow2", overlay],
            check=True,
        )
        argv = stock_argv(qemu_binary("x86_64"), overlay, serial, ports, smp, cpu, extra, accel)
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        timeline = Timeline(serial, start, pid=proc.pid)
        try:
            while timeline.login_at is None:
                if proc.poll() is not None:
                    raise SystemExit(f"stock QEMU exited with status {proc.returncode}")
                if time.perf_counter() - start > TIMEOUT:
                    raise SystemExit("stock QEMU did not reach a login prompt")
                time.sleep(0.05)
                timeline.poll()
            timeline.cpu = cpu_seconds(proc.pid)
        finally:
            proc.kill()
            proc.wait(30)
        return timeline


def start_detail() -> str:
    """How the last `aq start` booted (direct kernel boot, or firmware and why)."""
    import json

    events = json.loads(aq("history", NAME, "--json").stdout)
    return next(e["detail"] for e in reversed(events) if e["event"] == "start")


def aq_boot() -> tuple[float, Timeline]:
    """Cold `aq start` until it returns, with its console timeline."""
    from aq import paths

    log = paths.vm_files(NAME).console_log
    offset = log.stat().st_size if log.exists() else 0
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "aq", "start", NAME, "--timeout", str(TIMEOUT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    pidfile = paths.vm_files(NAME).pidfile
    timeline = Timeline(log, start, offset, pid=lambda: int(pidfile.read_text().split()[0]))
    while proc.poll() is None:
        time.sleep(0.05)
        timeline.poll()
    took = time.perf_counter() - start
    timeline.poll()
    if proc.returncode != 0:
        raise SystemExit(f"aq start failed: {proc.stderr.read().decode(errors='replace')}")
    pid = int(paths.vm_files(NAME).pidfile.read_text().split()[0])
    timeline.cpu = cpu_seconds(pid)
    return took, timeline


def together(disk: Path, boot_stock) -> tuple[float, Timeline, Timeline]:
    """`aq start` and the stock line booting at the same moment, each QEMU on its own
    core: whatever the shared host does to its speed (the rounds' spread, bench/
    BOOT-STALLS.md) it does to both at once. The stock line boots a copy of the VM's
    disk taken before (QEMU locks the disk aq's QEMU writes)."""
    import shutil
    import threading

    with tempfile.TemporaryDirectory(prefix="aq-bench-together-") as tmp:
        copy = Path(tmp) / "disk.qcow2"
        shutil.copyfile(disk, copy)
        result: dict[str, Timeline] = {}
        stock = threading.Thread(target=lambda: result.update(stock=boot_stock(copy)))
        stock.start()
        took, ours = aq_boot()
        stock.join()
        return took, ours, result["stock"]


def _warm_up(paths) -> None:
    """Host keys are made at a VM's first boot, and a clean stop makes its kernel copy
    current: what every later start of a VM looks like, so that is what is measured."""
    from aq import bootcopy

    fresh = "ready" not in aq("history", NAME).stdout
    copy, why = bootcopy.usable(paths.vm_files(NAME))
    if fresh or copy is None:
        reason = "first boot" if fresh else f"kernel copy not usable: {why}"
        print(f"warm-up start and stop ({reason}; not measured)", flush=True)
        aq("start", NAME, "--timeout", str(TIMEOUT))
        aq("stop", NAME)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stock-only", action="store_true", help="only the stock QEMU boot")
    ap.add_argument("--ports", type=int, default=0, help="virtio-serial ports on the stock line")
    ap.add_argument("--smp", type=int, default=1, help="vCPUs on the stock line")
    ap.add_argument("--cpu", default=None, help="-cpu on the stock line (default: QEMU's)")
    ap.add_argument("--all", action="store_true", help="every console line in the timelines")
    ap.add_argument("--extra", default="", help="more QEMU options for the stock line")
    ap.add_argument("--accel", default="tcg", help="-accel on the stock line (tcg,tb-size=64)")
    ap.add_argument("--rounds", type=int, default=1, help="alternate aq and stock N times")
    ap.add_argument(
        "--together",
        action="store_true",
        help="boot aq and the stock line at the same time, one vCPU each (needs 2+ cores)",
    )
    args = ap.parse_args()
    extra = shlex.split(args.extra)
    label = f"stock QEMU -smp {args.smp} -cpu {args.cpu or 'default'} + {args.ports} ports"
    label += f" {args.extra}" if extra else ""
    label += f" -accel {args.accel}" if args.accel != "tcg" else ""
    with environment():
        from aq import paths

        ensure_vm(NAME)
        aq("stop", NAME, "--force", check=False)
        disk = paths.vm_files(NAME).disk
        rows = []
        options = {"ports": args.ports, "smp": args.smp, "cpu": args.cpu, "accel": args.accel}
        boot_stock = functools.partial(stock_boot, extra=extra, **options)
        for _ in range(args.rounds):
            ours = None
            if args.together and not args.stock_only:
                _warm_up(paths)
                took, ours, stock = together(disk, boot_stock)
                print(f"aq start: {start_detail()} (together with the stock line)")
                aq("stop", NAME)
            else:
                if not args.stock_only:
                    _warm_up(paths)
                    took, ours = aq_boot()
                    print(f"aq start: {start_detail()}")
                    aq("stop", NAME)
                stock = boot_stock(disk)
            if ours is not None:
                ours.show("cold aq start", args.all)
            stock.show(label, args.all)
            print(f"{label}: login prompt after {stock.login_at:.1f}s (QEMU CPU {stock.cpu:.1f}s)")
            if ours is None:
                continue
            rows.append((took / stock.login_at, ours.cpu / stock.cpu))
            print(f"cold aq start to ready: {took:.1f}s (QEMU CPU {ours.cpu:.1f}s)")
            print(f"ratio {rows[-1][0]:.2f}; ratio of QEMU CPU time {rows[-1][1]:.2f}", flush=True)
        if rows:
            wall = statistics.median(r[0] for r in rows)
            cpu = statistics.median(r[1] for r in rows)
            verdict = "OK" if wall <= 0.5 else "OVER"
            print(f"ratio {wall:.2f} (median of {len(rows)}; target <= 0.5)  {verdict}")
            print(f"ratio of QEMU CPU time {cpu:.2f} (the same, robust to load)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
