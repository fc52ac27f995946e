"""`aq doctor`'s checks: can aq work on this host, and if not, what to do next.

Each check looks, never repairs: no database is created or migrated (settings are read
through aq.store.peek), and AQ_HOME is not made. The one thing kept is the accelerator
verdict, in the same cache `aq start` uses (aq.qemu.accel), and only when AQ_HOME
already exists. Every check is bounded in time: the accelerator probe by its timeout,
the mirror by MIRROR_TIMEOUT_S.

A check ends "ok", "warn" (aq works, but something deserves attention) or "fail" (aq
cannot work until it is fixed); doctor exits 0 when nothing failed.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from aq import host, paths
from aq.store import peek

MIN_QEMU = (7, 2)  # the oldest QEMU aq is tested with (Debian 12)
MIRROR_TIMEOUT_S = 5.0
DISK_FAIL = 1 << 30  # a base install needs about 1 GiB (the ISO, the base disk)
DISK_WARN = 4 << 30


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "ok", "warn" or "fail"
    detail: str
    hint: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def healthy(checks: list[Check]) -> bool:
    return all(c.status != "fail" for c in checks)


def _install_hint(arch: str) -> str:
    if sys.platform == "darwin":
        return "brew install qemu"
    return "apt install " + ("qemu-system-x86" if arch == "x86_64" else "qemu-system-arm")


def qemu_version(binary: str) -> str | None:
    """'7.2.19' from `qemu-system-* --version`, or None when it does not run."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"version (\d+\.\d+(?:\.\d+)?)", out)
    return found.group(1) if found else None


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def check_qemu(
    arch: str,
    which: Callable[[str], str | None] = shutil.which,
    version_of: Callable[[str], str | None] = qemu_version,
) -> Check:
    name = f"qemu-system-{arch}"
    binary = which(name)
    missing = [n for n, found in ((name, binary), ("qemu-img", which("qemu-img"))) if not found]
    if missing:
        return Check("qemu", "fail", f"{', '.join(missing)} not found", _install_hint(arch))
    assert binary is not None
    version = version_of(binary)
    if version is None:
        return Check(
            "qemu", "fail", f"{binary} does not run", f"reinstall QEMU ({_install_hint(arch)})"
        )
    if _version_tuple(version)[:2] < MIN_QEMU:
        oldest = ".".join(map(str, MIN_QEMU))
        return Check(
            "qemu", "warn", f"{binary} is QEMU {version}", f"aq is tested with {oldest} and newer"
        )
    return Check("qemu", "ok", f"{binary}, QEMU {version}")


def check_accel(
    binary: str | None,
    system: str,
    requested: str | None,
    kvm_present: bool,
    verdict: Callable[[str, str], object],
) -> Check:
    """The accelerator aq would use, proved by running aq's test guest under it.

    `verdict(binary, accel)` answers like aq.qemu.accel.remembered (works, reason).
    """
    if binary is None:
        return Check("accel", "fail", "no QEMU to run a guest with", "install QEMU first")
    slow = "guests boot in a minute or more under TCG"
    if requested:
        result = verdict(binary, requested) if requested != "hvf" else None
        if result is not None and not result.works:
            return Check(
                "accel",
                "fail",
                f"{requested} (set by AQ_ACCEL or `aq config`) cannot run a guest: {result.reason}",
                "unset it: `aq config unset accel` (or AQ_ACCEL)",
            )
        return Check("accel", "ok", f"{requested} (set by AQ_ACCEL or `aq config`)")
    if system == "darwin":
        return Check("accel", "ok", "hvf (macOS Hypervisor.framework)")
    kvm_why = "/dev/kvm is missing or not usable by this user"
    if kvm_present:
        kvm = verdict(binary, "kvm")
        if kvm.works:
            return Check("accel", "ok", "KVM works")
        kvm_why = f"KVM is present but cannot run a guest ({kvm.reason})"
    tcg = verdict(binary, "tcg")
    if not tcg.works:
        return Check("accel", "fail", f"TCG cannot run a guest: {tcg.reason}", "reinstall QEMU")
    if kvm_present:  # nested virtualization, usually: aq falls back to TCG by itself
        hint = f"{slow}; aq uses TCG here by itself (nested virtualization?)"
    else:
        hint = f"{slow}; enable KVM (load kvm_intel or kvm_amd, join the kvm group) for speed"
    return Check("accel", "warn", f"TCG works; KVM not usable: {kvm_why}", hint)


def check_firmware(binary: str | None, arch: str) -> Check:
    from aq.qemu import hostinfo

    if binary is None:
        return Check("firmware", "fail", "no QEMU installation to look in", "install QEMU first")
    if arch == "aarch64":
        found = hostinfo.find_uefi_firmware(binary, arch)
        if found is None:
            hint = (
                "brew install qemu" if sys.platform == "darwin" else "apt install qemu-efi-aarch64"
            )
            return Check("firmware", "fail", "no UEFI firmware for aarch64", hint)
        return Check("firmware", "ok", f"UEFI {found}")
    for folder in hostinfo.data_dirs(binary):
        if (folder / "bios-256k.bin").is_file():
            return Check("firmware", "ok", f"SeaBIOS {folder / 'bios-256k.bin'}")
    hint = "brew install qemu" if sys.platform == "darwin" else "apt install seabios"
    return Check("firmware", "fail", "SeaBIOS (bios-256k.bin) not in QEMU's data folders", hint)


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(home: Path, usage: Callable[[Path], object] = shutil.disk_usage) -> Check:
    free = usage(_existing(home)).free
    gib = free / (1 << 30)
    detail = f"{gib:.1f} GiB free for {home}"
    hint = "free some space, or point AQ_HOME at a larger disk"
    if free < DISK_FAIL:
        return Check("disk", "fail", f"{detail}; a base install needs about 1 GiB", hint)
    if free < DISK_WARN:
        return Check("disk", "warn", f"{detail}; each VM's disk grows as it is used", hint)
    return Check("disk", "ok", detail)


def check_home(home: Path) -> Check:
    """AQ_HOME must be a real directory of ours that we can write (or be creatable)."""
    hint = "fix its owner and permissions, or point AQ_HOME elsewhere"
    try:
        info = os.lstat(home)
    except FileNotFoundError:
        parent = _existing(home)
        if os.access(parent, os.W_OK | os.X_OK):
            return Check("home", "ok", f"{home} (will be made on first use)")
        return Check("home", "fail", f"{home} does not exist and {parent} is not writable", hint)
    except OSError as err:
        return Check("home", "fail", f"{home}: {err.strerror}", hint)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        return Check("home", "fail", f"{home} is not a directory (a symlink or a file?)", hint)
    if info.st_uid != os.getuid():
        return Check("home", "fail", f"{home} belongs to another user (uid {info.st_uid})", hint)
    if not os.access(home, os.W_OK | os.X_OK):
        return Check("home", "fail", f"{home} is not writable", hint)
    db = paths.db_path()
    if db.exists() and not os.access(db, os.R_OK | os.W_OK):
        return Check("home", "fail", f"{db} is not readable and writable", hint)
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        return Check("home", "ok", f"{home} (mode {mode:o}; aq makes it 700 on next use)")
    return Check("home", "ok", str(home))


def mirror_url() -> str:
    """The mirror aq would use: AQ_MIRROR, then `aq config`, then Alpine's CDN."""
    from aq.config import DEFAULT_MIRROR

    value = os.environ.get("AQ_MIRROR") or peek.setting("mirror") or DEFAULT_MIRROR
    return value.rstrip("/")


def _reach(url: str) -> str | None:
    """None when `url` answers within MIRROR_TIMEOUT_S, else why not."""
    from aq.errors import AqError
    from aq.images import http

    if url.startswith("file://"):
        return None if Path(url[len("file://") :]).is_file() else "no such file"
    try:
        with http.open_url(url, seconds=MIRROR_TIMEOUT_S) as response:
            response.read_block(1)
    except AqError as err:
        return err.message
    except OSError as err:  # an HTTP 416 or a read that broke off
        return str(err)
    return None


def check_mirror(
    mirror: str, arch: str, base_present: bool, reach: Callable[[str], str | None] = _reach
) -> Check:
    from aq.safetext import for_terminal

    url = f"{mirror}/latest-stable/releases/{arch}/latest-releases.yaml"
    why = reach(url)
    shown = for_terminal(mirror, one_line=True)
    if why is None:
        return Check("mirror", "ok", f"{shown} answers")
    why = for_terminal(why, one_line=True)
    hint = "check the network, or `aq config set mirror URL` (or AQ_MIRROR)"
    if base_present:
        return Check(
            "mirror", "warn", f"{shown} unreachable ({why}); the installed base works offline", hint
        )
    return Check(
        "mirror", "fail", f"{shown} unreachable ({why}); the first `aq new` needs it", hint
    )


def run_checks() -> list[Check]:
    """Every check, in the order a user would fix them."""
    from aq.qemu import accel as probing
    from aq.qemu import hostinfo

    arch = host.guest_arch()
    system = "darwin" if sys.platform == "darwin" else "linux"
    home = paths.home()
    qemu = check_qemu(arch)
    binary = shutil.which(f"qemu-system-{arch}") if qemu.status != "fail" else None
    # Remember the verdict where `aq start` will look, but make no AQ_HOME for it.
    verdict = probing.remembered if home.is_dir() else (lambda b, a: probing.probe(b, a))
    requested = os.environ.get("AQ_ACCEL") or peek.setting("accel")
    checks = [
        qemu,
        check_accel(binary, system, requested, hostinfo.kvm_usable(), verdict),
        check_firmware(binary, arch),
        check_home(home),
        check_disk(home),
        check_mirror(mirror_url(), arch, peek.has_base(arch)),
    ]
    return checks
