"""The host's copy of a VM's own kernel, initramfs and command line, for direct boot.

Booting the kernel directly (-kernel/-initrd/-append) skips the firmware and the
bootloader reading the kernel through the BIOS (9-34 s under TCG). It must boot what
the guest's bootloader would boot, so aq keeps a copy in the VM's folder and trusts it
only when it is known to be current:

  - `aq stop` asks the guest, before pressing the power button, what its bootloader
    boots (aq.guest.bootconfig) and the sha256 of those files; when they differ from
    the copy, the files are fetched over the command channel. Only then is the copy
    marked current.
  - every start clears the mark before QEMU runs: from then on the guest may upgrade
    its kernel or change its command line, and only the next clean stop can tell.

So a VM that crashed, was killed, powered itself off or was never stopped by aq boots
through the firmware next time (what it would have booted anyway), and the history
says why. The guest is not trusted: every answer is bounded in size and time, and the
files only ever land under the VM's own folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from aq import coldplug, initramfs, paths, pvh
from aq.errors import AqError
from aq.guest import bootconfig, channel
from aq.guest.wire import Bounded, ChannelError
from aq.paths import VmFiles

KERNEL_MAX = 128 << 20
INITRD_MAX = 512 << 20
STEP_TIMEOUT = 30.0  # seconds for each guest command while refreshing
_SHA_LINE = re.compile(r"^([0-9a-f]{64})  (/\S+)$")


@dataclass(frozen=True)
class Copy:
    """A copy on the host, as recorded in boot.json."""

    config: str  # the bootloader configuration it came from, in the guest
    kernel: str  # guest paths
    initrds: list[str]
    append: str
    kernel_sha256: str
    initrd_sha256: str  # of the guest's initramfs files concatenated
    current: bool
    # The guest's sysinit replays every device event (aq.coldplug): the initrd file
    # then ends with aq's overlay, which narrows the initramfs's device helper.
    replays_devices: bool = False
    # The kernel is also kept unpacked for QEMU's PVH entry (aq.pvh), and booted so.
    pvh: bool = False
    # The guest's `stat` of the entry's files when their sha256 was taken (name, size,
    # mtime, ctime, inode): while it reads the same, the sha256 still holds, and a clean
    # stop need not read 19 MB that a direct boot left out of the guest's page cache
    # (1.7 s of a stop under TCG, measured). Writing a file changes its ctime.
    fingerprint: str = ""

    def files(self, files: VmFiles) -> tuple[Path, Path | None]:
        return self.files_in(files.boot_copy)

    def files_in(self, folder: Path) -> tuple[Path, Path | None]:
        kernel = folder / (pvh.ELF_NAME if self.pvh else "kernel")
        return kernel, (folder / "initrd") if self.initrds else None


RECORD = "boot.json"


def read_record(folder: Path) -> Copy | None:
    """The copy recorded in `folder` (a VM's boot folder, or a base's), if any."""
    try:
        data = json.loads((folder / RECORD).read_text())
        return Copy(**data)
    except (OSError, ValueError, TypeError):
        return None


def write_record(folder: Path, copy: Copy) -> None:
    record = folder / RECORD
    temp = record.with_suffix(".tmp")
    paths.write_private(temp, json.dumps(asdict(copy)))
    temp.replace(record)


def load(files: VmFiles) -> Copy | None:
    return read_record(files.boot_copy)


def _save(files: VmFiles, copy: Copy) -> None:
    write_record(files.boot_copy, copy)


def share(source: Path, target: Path, only_current: bool = True) -> bool:
    """Put the copy in folder `source` into folder `target` (a new one), its record as
    it is; linked when the filesystem allows: the files are never written in place (a
    refresh replaces them). False, and nothing left behind, when there is no copy (or,
    with `only_current`, none known current).

    A copy that is not current is still what a running QEMU was started with: a saved
    state's command line names those files, so its clones need them to resume."""
    copy = read_record(source)
    if copy is None or (only_current and not copy.current):
        return False
    names = ["kernel", "initrd"] if copy.initrds else ["kernel"]
    if copy.pvh:
        names.append(pvh.ELF_NAME)
    try:
        paths.make_private_dir(target)
        for name in names:
            (target / name).unlink(missing_ok=True)
            try:
                os.link(source / name, target / name)
            except OSError:
                shutil.copyfile(source / name, target / name)
        write_record(target, copy)
    except OSError:
        shutil.rmtree(target, ignore_errors=True)
        return False
    return True


def adopt(source: Path, files: VmFiles) -> bool:
    """Give a new VM the copy kept beside the image its disk overlays (a base's, from
    aq.images.basekernel, or a stopped snapshot's): until the VM first boots its disk
    is that image, so the copy is current for it (or, from a live snapshot, not
    current but what the snapshot's saved state was started with)."""
    return share(source, files.boot_copy, only_current=False)


def usable(files: VmFiles) -> tuple[Copy | None, str]:
    """The copy to boot directly, or None and why the firmware must boot instead."""
    copy = load(files)
    if copy is None:
        return None, "no copy of its kernel yet"
    if not copy.current:
        return None, "kernel copy stale: the last stop was not a clean `aq stop`"
    kernel, initrd = copy.files(files)
    if not kernel.is_file() or (initrd is not None and not initrd.is_file()):
        return None, "kernel copy missing"
    return copy, ""


def invalidate(files: VmFiles) -> None:
    """Before QEMU runs: the guest may change its boot files from now on."""
    copy = load(files)
    if copy is not None and copy.current:
        _save(files, Copy(**{**asdict(copy), "current": False}))


def _guest_text(files: VmFiles, argv: list[str], limit: int) -> tuple[int, str]:
    status, out, _ = channel.capture(files, argv, timeout=STEP_TIMEOUT, limit=limit)
    return status, out.decode(errors="replace")


def _find_config(files: VmFiles, arch: str) -> tuple[str, str]:
    for config in bootconfig.CONFIGS.get(arch, bootconfig.CONFIGS["x86_64"]):
        status, text = _guest_text(
            files, ["head", "-c", str(bootconfig.CONFIG_MAX + 1), config], bootconfig.CONFIG_MAX + 1
        )
        if status == 0:
            return config, text
    raise bootconfig.Unsupported("the guest has no bootloader configuration aq can read")


def _candidates(config: str, entry: bootconfig.BootEntry) -> dict[str, list[str]]:
    """{bootloader path: the guest paths it may mean}, for the entry's files."""
    return {p: bootconfig.candidates(config, p) for p in (entry.kernel, *entry.initrds)}


def _every(wanted: dict[str, list[str]]) -> list[str]:
    return sorted({c for found in wanted.values() for c in found})


def _fingerprint(files: VmFiles, wanted: dict[str, list[str]]) -> str:
    """The entry's files in order, then the guest's `stat` of every candidate as it
    printed it (a candidate that does not exist is left out, and stat then exits 1); ""
    if it printed nothing. Only ever compared with an earlier one, never parsed."""
    argv = ["stat", "-c", "%n %s %Y %Z %i", *_every(wanted)]
    _, text = _guest_text(files, argv, 64 << 10)
    return "\n".join([*wanted, text]) if text.strip() else ""


def _hashes(files: VmFiles, wanted: dict[str, list[str]]) -> dict[str, tuple[str, str]]:
    """{bootloader path: (guest path, sha256)} for the entry's files, as found now."""
    _, text = _guest_text(files, ["sha256sum", *_every(wanted)], 64 << 10)
    seen = {}
    for line in text.splitlines():
        match = _SHA_LINE.match(line)
        if match:
            seen[match.group(2)] = match.group(1)
    result = {}
    for name, options in wanted.items():
        path = next((c for c in options if c in seen), None)
        if path is None:
            raise bootconfig.Unsupported(f"the guest's bootloader names {name}, which is missing")
        result[name] = (path, seen[path])
    return result


class _BoundedFile:
    """Writes to a file, refusing to grow past `limit` (the guest may be hostile)."""

    def __init__(self, handle, limit: int) -> None:
        self.handle, self.limit, self.size = handle, limit, 0
        self.digest = hashlib.sha256()

    def write(self, data) -> int:
        self.size += len(data)
        if self.size > self.limit:
            raise ChannelError(f"a boot file exceeded {self.limit} bytes", hint="")
        self.digest.update(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()

    def fileno(self) -> int:
        return self.handle.fileno()


def _fetch(
    files: VmFiles,
    guest_paths: list[str],
    target: Path,
    limit: int,
    sha: str,
    tail: bytes | None = None,
) -> None:
    """Concatenate the guest files into `target`, only if what came has sha256 `sha`.
    With a `tail` (aq's own bytes, possibly empty) they are an initramfs: unpacked when it
    can be (aq.initramfs), then the tail after them."""
    temp = target.with_suffix(".part")
    try:
        with paths.open_private(temp) as handle:
            sink = _BoundedFile(handle, limit)
            status = channel.run(
                files,
                ["cat", *guest_paths],
                channel.ExecOptions(None, sink, Bounded(4096), timeout=STEP_TIMEOUT * 4),
            )
            if status != 0:
                raise bootconfig.Unsupported(f"could not read {' '.join(guest_paths)} in the guest")
            if sink.digest.hexdigest() != sha:
                raise bootconfig.Unsupported(f"{guest_paths[0]} changed while it was read")
            if tail is not None:
                handle.write(tail)
        if tail is not None:
            initramfs.unpack_file(temp, len(tail))
        temp.replace(target)
    finally:
        temp.unlink(missing_ok=True)


def _concat_sha(files: VmFiles, guest_paths: list[str]) -> str:
    """sha256 of several guest files concatenated (what QEMU's -initrd gets)."""
    _, text = _guest_text(files, ["sh", "-c", 'cat "$@" | sha256sum', "sh", *guest_paths], 4096)
    return text.split(" ")[0].strip()


def _replays_devices(files: VmFiles) -> bool:
    """Whether the guest's sysinit runlevel starts a device manager (aq.coldplug)."""
    status, text = _guest_text(files, ["ls", "/etc/runlevels/sysinit"], 64 << 10)
    return status == 0 and coldplug.replays_devices(text.split())


def _ends_with(path: Path, tail: bytes) -> bool:
    """Whether the file exists and ends with `tail` (read from its end only)."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            if size < len(tail):
                return False
            handle.seek(size - len(tail))
            return handle.read() == tail
    except OSError:
        return False


def refresh(files: VmFiles, arch: str) -> str:
    """Make the copy current from the running guest; what happened, for the history."""
    started = time.monotonic()
    try:
        config, text = _find_config(files, arch)
        entry = bootconfig.parse(config, text)
        wanted = _candidates(config, entry)
        fingerprint = _fingerprint(files, wanted)
        old = load(files)
        if old is not None and fingerprint and old.fingerprint == fingerprint:
            # The same files, unwritten since their sha256 was taken: the same names
            # were found (the fingerprint names every candidate that exists).
            kernel_path, kernel_sha = old.kernel, old.kernel_sha256
            initrd_paths, initrd_sha = old.initrds, old.initrd_sha256
        else:
            found = _hashes(files, wanted)
            kernel_path, kernel_sha = found[entry.kernel]
            initrd_paths = [found[p][0] for p in entry.initrds]
            initrd_sha = found[entry.initrds[0]][1] if len(initrd_paths) == 1 else ""
        replays = _replays_devices(files)
    except (bootconfig.Unsupported, AqError) as err:
        return f"kernel copy not refreshed: {getattr(err, 'message', None) or err}"
    replays = replays and bool(initrd_paths)  # with no initramfs, nothing to narrow
    fetched = []
    try:
        paths.make_private_dir(files.boot_copy)
        if not initrd_sha and initrd_paths:
            initrd_sha = _concat_sha(files, initrd_paths)
        kernel_file = files.boot_copy / "kernel"
        if old is None or old.kernel_sha256 != kernel_sha or not kernel_file.is_file():
            _fetch(files, [kernel_path], kernel_file, KERNEL_MAX, kernel_sha)
            fetched.append("kernel")
        unpacked = (
            old is not None
            and old.pvh
            and "kernel" not in fetched
            and (files.boot_copy / pvh.ELF_NAME).is_file()
        ) or pvh.write_beside(kernel_file)
        initrd_file = files.boot_copy / "initrd"
        tail = coldplug.initrd_tail(replays, arch)
        if initrd_paths and (
            old is None
            or old.initrd_sha256 != initrd_sha
            or old.replays_devices != replays
            or not _ends_with(initrd_file, tail)  # missing, or an older aq's helper
        ):
            _fetch(files, initrd_paths, initrd_file, INITRD_MAX, initrd_sha, tail)
            fetched.append("initramfs")
    except (bootconfig.Unsupported, AqError, OSError) as err:
        return f"kernel copy not refreshed: {getattr(err, 'message', None) or err}"
    copy = Copy(
        config,
        kernel_path,
        initrd_paths,
        entry.append,
        kernel_sha,
        initrd_sha,
        True,
        replays,
        unpacked,
        fingerprint,
    )
    _save(files, copy)
    took = time.monotonic() - started
    what = f"fetched {' and '.join(fetched)}" if fetched else "unchanged"
    if old is not None and old.append != entry.append:
        what += "; new command line"
    return f"kernel copy current ({what}, {took:.1f} s)"
