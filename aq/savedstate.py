"""Saved states: a paused VM's memory written to a file, read back to resume it.

A saved state is QEMU's migration stream of a paused VM. QEMU 7.2 has no `file:`
migration URI (it came in 8.2), so both directions use `exec:` with a fixed shell
command whose one variable part, the path, is quoted: `cat > PATH` to save and
`cat PATH` to load; 7.2 and 10.x both run it through /bin/sh -c.

Resuming needs the very QEMU command line the VM booted with (device set, machine,
memory), not the one aq builds today, so the boot's argv is recorded with its
VM-specific parts (folder, socket folder, name, MAC, user network) as placeholders:
a clone of a live snapshot gets its own values filled in. A saved state is used only
while what it was made with still holds (`problem` says what no longer does); else
aq boots cold and says why, never forcing it.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import subprocess
import time
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any

from aq import paths
from aq.errors import AqError
from aq.store.models import SavedState, Vm

MIGRATE_TIMEOUT = 300.0  # seconds for a save or a load to complete
SLACK = 64 << 20  # a stream may exceed the guest's RAM by device state, but not by much
VMDIR, SOCKDIR, NAME, MAC, NETDEV = "@VMDIR@", "@SOCKDIR@", "@NAME@", "@MAC@", "@NETDEV@"
DISK = "@DISK@"  # the VM's disk now (a live snapshot gives it a new overlay)
DISK_FILE = re.compile(r"(^|,)file=([^,]*/disk[^,/]*\.qcow2)(,|$)")


class SaveFailed(AqError):
    """Saving or loading a migration stream failed; `reason` is for the history."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- what a saved state depends on -------------------------------------------------


def running_version(qmp: Any) -> str:
    """The running QEMU's version, e.g. '7.2.22 Debian 1:7.2+dfsg-7+deb12u18+b3'."""
    answer = qmp.command("query-version")
    q = answer["qemu"]
    return f"{q['major']}.{q['minor']}.{q['micro']} {answer.get('package', '')}".strip()


@cache
def binary_version(binary: str) -> str:
    """The installed QEMU's version, in the form `running_version` gives."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    match = re.search(r"version (\S+)(?: \((.*?)\))?", out.stdout)
    if match is None:
        return "unknown"
    return f"{match.group(1)} {match.group(2) or ''}".strip()


def running_machine(qmp: Any) -> str:
    """The running QEMU's machine type, resolved ('pc-i440fx-7.2', never 'pc')."""
    kind = qmp.command("qom-get", path="/machine", property="type")
    return kind.removesuffix("-machine")


@cache
def resolve_machine(binary: str, name: str) -> str:
    """What `-machine name` means for this QEMU (an alias resolved), or `name`.

    Asking QEMU costs a third of a second, on every resume; the answer is kept in a
    file keyed by the binary's path, size and mtime (a new QEMU is a new key)."""
    import os

    info = os.stat(binary)
    key = f"{os.path.realpath(binary)}:{info.st_size}:{info.st_mtime_ns}:{name}"
    cache_file = paths.machine_cache()
    try:
        known = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), str):
        return known[key]
    resolved = _ask_machine(binary, name)
    known = {**(known if isinstance(known, dict) else {}), key: resolved}
    with contextlib.suppress(OSError):
        paths.make_private_dir(cache_file.parent)
        tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}")
        paths.write_private(tmp, json.dumps(known, indent=1, sort_keys=True) + "\n")
        tmp.replace(cache_file)  # atomic: a concurrent reader sees one file or the other
    return resolved


def _ask_machine(binary: str, name: str) -> str:
    out = subprocess.run(
        [binary, "-machine", "help"], capture_output=True, text=True, timeout=30
    ).stdout
    for line in out.splitlines():
        words = line.split()
        if words and words[0] == name:
            alias = re.search(r"\(alias of ([^)]+)\)", line)
            return alias.group(1) if alias else name
    return name


def machine_option(argv: list[str]) -> str | None:
    """The machine type named on a command line (`-machine pc,...` -> 'pc')."""
    for flag, value in pairwise(argv):
        if flag in ("-machine", "-M"):
            return value.split(",")[0].removeprefix("type=")
    return None


def disk_identity(vm: Vm) -> str:
    """The disk state a saved state belongs to: the VM's overlay file as it is now
    (inode, size, modification time) and the image it stands on. Any write changes it."""
    try:
        info = Path(vm.disk_path).stat()
    except FileNotFoundError:
        return "missing"
    return f"image {vm.base_image_id}; {info.st_ino}:{info.st_size}:{info.st_mtime_ns}"


# --- the boot's command line, with placeholders -------------------------------------


def _sockdir(files: paths.VmFiles) -> str:
    return str(Path(paths.short_socket_path(files.qmp)).parent)


def template(argv: list[str], vm: Vm, files: paths.VmFiles) -> list[str]:
    """`argv` with what is particular to `vm` replaced by placeholders."""
    root, sock = str(files.root) + "/", _sockdir(files) + "/"
    out, previous = [], ""
    for arg in argv[1:]:
        if arg == "-incoming" or previous == "-incoming":
            previous = arg
            continue
        if previous == "-name":
            arg = f"guest={NAME}"
        elif previous == "-drive" and DISK_FILE.search(arg):
            arg = DISK_FILE.sub(rf"\1file={DISK}\3", arg)
        elif previous == "-netdev" and arg.startswith("user,"):
            arg = NETDEV
        else:
            if sock != root:
                arg = arg.replace(sock, SOCKDIR + "/")
            arg = arg.replace(root, VMDIR + "/").replace(f"mac={vm.mac}", f"mac={MAC}")
        out.append(arg)
        previous = arg
    return out


def instantiate(
    saved: list[str], vm: Vm, files: paths.VmFiles, binary: str, current: list[str]
) -> list[str]:
    """The recorded command line for `vm`, its own folder, MAC and forwards filled in
    (the user network is taken from `current`, the argv aq would build today)."""
    netdev = next(
        (value for flag, value in pairwise(current) if flag == "-netdev"),
        "user,id=net0",
    )
    out = [binary]
    for arg in saved:
        if arg == NETDEV:
            out.append(netdev)
            continue
        arg = arg.replace(f"file={DISK}", f"file={vm.disk_path}")
        arg = arg.replace(SOCKDIR + "/", _sockdir(files) + "/")
        arg = arg.replace(VMDIR + "/", f"{files.root}/")
        out.append(arg.replace(f"guest={NAME}", f"guest={vm.name}").replace(MAC, vm.mac))
    return out


# --- validity ------------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """What the host offers now, to compare a saved state with."""

    binary: str
    arch: str
    accel: str


def problem(state: SavedState, vm: Vm, facts: Facts) -> str | None:
    """Why `state` cannot resume `vm` now, or None when it can."""
    path = Path(state.path)
    if not path.is_file():
        return f"its file {path.name} is missing"
    if path.stat().st_size != state.size:
        return f"its file {path.name} changed size"
    if state.arch != facts.arch:
        return f"it was saved on {state.arch}, this host runs {facts.arch}"
    if state.accel != facts.accel:
        return f"it was saved under {state.accel}, this start uses {facts.accel}"
    version = binary_version(facts.binary)
    if state.qemu_version != version:
        return f"it was saved by QEMU {state.qemu_version}, QEMU is now {version}"
    argv = json.loads(state.argv)
    named = machine_option(argv)
    machine = resolve_machine(facts.binary, named) if named else "unknown"
    if machine != state.machine:
        return f"it needs machine type {state.machine}, QEMU now gives {machine}"
    if state.memory_mib != vm.memory_mib:
        return f"it holds {state.memory_mib} MiB of memory, the VM has {vm.memory_mib} MiB"
    if state.disk != disk_identity(vm):
        return "the disk changed since it was saved"
    return None


# --- writing and reading streams -----------------------------------------------------


def _wait_migration(qmp: Any, alive: Any, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        info = qmp.command("query-migrate")
        status = info.get("status")
        if status == "completed":
            return info
        if status in ("failed", "cancelled"):
            raise SaveFailed(f"QEMU's migration {status}: {info.get('error-desc', 'no reason')}")
        if not alive():
            raise SaveFailed("QEMU exited during the migration")
        if time.monotonic() > deadline:
            raise SaveFailed(f"the migration did not complete within {timeout:.0f}s")
        time.sleep(0.05)


def save(qmp: Any, path: Path, memory_mib: int, alive: Any) -> int:
    """Write the paused VM's state to `path` (made private first); its size.

    The VM must be paused: the stream then matches the disk at this instant."""
    paths.write_private(path, "")
    qmp.command("migrate", uri=f"exec:cat > {shlex.quote(str(path))}")
    _wait_migration(qmp, alive, MIGRATE_TIMEOUT)
    size = path.stat().st_size
    if size == 0 or size > (memory_mib << 20) + SLACK:
        raise SaveFailed(f"the saved state has an implausible size ({size} bytes)")
    return size


def load(qmp: Any, path: Path, alive: Any) -> None:
    """Feed a QEMU started with `-incoming defer` the stream in `path`."""
    qmp.command("migrate-incoming", uri=f"exec:cat {shlex.quote(str(path))}")
    _wait_migration(qmp, alive, MIGRATE_TIMEOUT)


def capture_facts(qmp: Any) -> tuple[str, str]:
    """(version, machine) of the running QEMU, read before it is paused."""
    return running_version(qmp), running_machine(qmp)


def running_argv(pid: int, files: paths.VmFiles) -> list[str]:
    """The device set of the VM's running QEMU: its command line (from the process, else
    qemu.cmdline) plus the command-channel ports hot-added since it started, unless
    that command line already had them (a VM that was itself resumed)."""
    import psutil

    from aq import machine

    argv: list[str] = []
    with contextlib.suppress(psutil.Error):
        argv = psutil.Process(pid).cmdline()
    argv = argv or shlex.split(files.cmdline.read_text())
    if not any("name=aq.exec." in arg for arg in argv):
        argv += machine.plugged_slots_argv(files)
    return argv


def new_record(
    *,
    path: Path,
    size: int,
    owned: bool,
    version: str,
    machine: str,
    accel: str,
    vm: Vm,
    argv: list[str],
    disk: str,
) -> SavedState:
    """A saved-state row (its owner, vm_id or image_id, set by the caller)."""
    return SavedState(
        path=str(path),
        owned=owned,
        source_vm_id=vm.id,
        size=size,
        qemu_version=version,
        machine=machine,
        accel=accel,
        arch=vm.arch,
        memory_mib=vm.memory_mib,
        argv=json.dumps(argv),
        disk=disk,
    )


def forget_vm(session: Any, vm_id: int) -> None:
    """Drop the saved state a VM holds, in the transaction that removes the VM (its own
    file goes with the VM's folder; a clone's copy names the snapshot's, which stays)."""
    from sqlalchemy import delete

    session.execute(delete(SavedState).where(SavedState.vm_id == vm_id))


def copy_for(state: SavedState, disk: str) -> SavedState:
    """A clone's record of a snapshot's memory: same facts, its own disk, not owned."""
    return SavedState(
        path=state.path,
        owned=False,
        source_vm_id=state.source_vm_id,
        size=state.size,
        qemu_version=state.qemu_version,
        machine=state.machine,
        accel=state.accel,
        arch=state.arch,
        memory_mib=state.memory_mib,
        argv=state.argv,
        disk=disk,
    )
