"""Whether an accelerator can really run a guest here: probed once, remembered.

/dev/kvm can exist while KVM cannot run a guest (nested virtualization): QEMU then aborts
at start (`kvm_buf_set_msrs: Assertion ... failed`, "failed to set MSR 0x10a") or the
guest crawls so slowly past kernel entry that it never boots. Opening /dev/kvm proves
neither, so aq boots a 243-byte test guest (PROBE_SOURCE) with the accelerator: it
enters 64-bit long mode with paging, as every x86_64 kernel does first, runs a 20-million
step loop (milliseconds under a working KVM, 0.2 s under TCG; on the broken host it never
ends) and leaves QEMU through isa-debug-exit with status PROBE_OK.

The verdict is kept in $AQ_HOME/accel-probe.json, keyed by host name, kernel release,
the QEMU binary (path, size, mtime: a new QEMU is a new key, without running it on
every start) and the accelerator. A file rather than the settings table: it is a cache
of a fact about the host, not a user's setting (`aq config` must not show it), deleting
it only costs one more probe, and it needs no schema change.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aq import paths
from aq.safetext import for_terminal

PROBE_TIMEOUT = 15.0  # seconds; SeaBIOS alone took 4.7 s under this host's nested KVM
PROBE_OK = (0x2A << 1) | 1  # isa-debug-exit turns the guest's 0x2a into QEMU status 85
CACHE_NAME = paths.ACCEL_CACHE

# GNU as: `as --64 -o p.o p.S && objcopy -O binary -j .text p.o p.bin` gives PROBE_IMAGE.
# A multiboot image (a.out kludge) that QEMU's -kernel loads at 1 MiB and enters in
# 32-bit protected mode; it prints "aq-probe-ok" on COM1 before it exits.
PROBE_SOURCE = r"""
	.code32
	.set BASE, 0x100000
	.set TABLES, 0x200000
header:
	.long 0x1BADB002
	.long 0x00010000
	.long -(0x1BADB002 + 0x00010000)
	.long BASE
	.long BASE
	.long 0
	.long 0
	.long BASE + (start - header)
start:
	cli
	cld
	mov $TABLES, %edi
	xor %eax, %eax
	mov $(3 * 1024), %ecx
	rep stosl
	movl $(TABLES + 0x1003), TABLES
	movl $(TABLES + 0x2003), TABLES + 0x1000
	movl $0x83, TABLES + 0x2000
	mov $TABLES, %eax
	mov %eax, %cr3
	mov %cr4, %eax
	or $0x20, %eax
	mov %eax, %cr4
	mov $0xC0000080, %ecx
	rdmsr
	or $0x100, %eax
	wrmsr
	mov %cr0, %eax
	or $0x80000001, %eax
	mov %eax, %cr0
	lgdt BASE + (gdtr - header)
	ljmp $0x08, $(BASE + (long - header))
	.code64
long:
	mov $20000000, %rcx
	mov $0x110000, %rdi
1:	mov %rcx, %rax
	and $0xffff, %rax
	movb %cl, (%rdi, %rax)
	addb (%rdi, %rax), %bl
	dec %rcx
	jnz 1b
	lea BASE + (message - header), %rsi
	mov $0x3f8, %dx
2:	lodsb
	test %al, %al
	jz 3f
	out %al, %dx
	jmp 2b
3:	mov $0xf4, %dx
	mov $0x2a, %eax
	out %eax, %dx
4:	hlt
	jmp 4b
	.p2align 3
gdt:
	.quad 0
	.quad 0x00209A0000000000
gdtr:
	.word gdtr - gdt - 1
	.long BASE + (gdt - header)
message:
	.asciz "aq-probe-ok\n"
"""

PROBE_IMAGE = bytes.fromhex(
    "02b0ad1b00000100fe4f51e40000100000001000000000000000000020001000fafcbf0000200031c0b9000c"
    "0000f3abc7050000200003102000c7050010200003202000c7050020200083000000b8000020000f22d80f20"
    "e083c8200f22e0b9800000c00f320d000100000f300f20c00d010000800f22c00f0115e0001000ea86001000"
    "080048c7c1002d310148c7c7000011004889c84825ffff0000880c07021c0748ffc975ec488d3425e6001000"
    "66baf803ac84c07403eeebf866baf400b82a000000eff4ebfd0f1f8000000000000000000000000000000000"
    "009a20000f00d000100061712d70726f62652d6f6b0a00"
)


@dataclass(frozen=True)
class Verdict:
    works: bool
    reason: str = ""  # why not, in a few words, for the user
    fresh: bool = False  # probed just now (not remembered from before)


def probe_argv(binary: str, accel: str, image: Path) -> list[str]:
    """The test guest's QEMU command line: aq's machine, CPU model and two vCPUs."""
    cpu = "host" if accel in ("kvm", "hvf") else "max"
    return [
        binary,
        *("-machine", "pc", "-accel", accel, "-cpu", cpu, "-smp", "2", "-m", "64"),
        *("-nodefaults", "-display", "none", "-monitor", "none", "-serial", "none"),
        *("-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-no-reboot"),
        *("-kernel", str(image)),
    ]


def run_probe(argv: list[str], timeout: float = PROBE_TIMEOUT) -> Verdict:
    """Run the test guest; it works only if QEMU leaves with PROBE_OK in time."""
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Verdict(False, f"a test guest made no progress in {timeout:.0f} s", fresh=True)
    except OSError as err:
        return Verdict(False, f"QEMU did not run: {err.strerror}", fresh=True)
    if proc.returncode == PROBE_OK:
        return Verdict(True, fresh=True)
    said = [line for line in proc.stderr.decode(errors="replace").splitlines() if line.strip()]
    reason = f"QEMU said: {said[-1].strip()}" if said else f"QEMU exited ({proc.returncode})"
    return Verdict(False, for_terminal(reason)[:200], fresh=True)


def probe(binary: str, accel: str, timeout: float = PROBE_TIMEOUT) -> Verdict:
    with tempfile.TemporaryDirectory(prefix="aq-probe-") as tmp:
        image = Path(tmp) / "probe.bin"
        image.write_bytes(PROBE_IMAGE)
        return run_probe(probe_argv(binary, accel, image), timeout)


def cache_key(binary: str, accel: str) -> str:
    real = os.path.realpath(binary)
    try:
        st = os.stat(real)
        ident = f"{real} {st.st_size} {st.st_mtime_ns}"
    except OSError:
        ident = real
    return f"{platform.node()} {platform.release()} | {ident} | {accel}"


def _cache_file() -> Path:
    return paths.accel_cache()


def _load() -> dict:
    try:
        data = json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save(data: dict) -> None:
    target = _cache_file()
    paths.make_private_dir(target.parent)
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    paths.write_private(tmp, json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(target)  # atomic: a concurrent reader sees the old file or the new one


def remembered(binary: str, accel: str, run: Callable[[str, str], Verdict] = probe) -> Verdict:
    """The verdict for (host, QEMU binary, accel): from the cache, else probed and kept."""
    key = cache_key(binary, accel)
    entry = _load().get(key)
    if isinstance(entry, dict) and isinstance(entry.get("works"), bool):
        return Verdict(entry["works"], str(entry.get("reason", "")))
    verdict = run(binary, accel)
    data = _load()
    data[key] = {"works": verdict.works, "reason": verdict.reason}
    _save(data)
    return verdict
