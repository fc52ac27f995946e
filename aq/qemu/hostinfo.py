"""What the host's QEMU can do: which binary, which accelerator, which firmware.

Everything here is detected at run time, never hard-coded to a versioned path: the
accelerator from the OS and /dev/kvm, checked by running a test guest once (aq.qemu.accel;
--accel, AQ_ACCEL or `aq config set accel` override it), UEFI firmware from the QEMU
installation's own firmware descriptors and data directories.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from aq import defaults, host
from aq.errors import AqError, InvalidInput
from aq.qemu import accel as probing

ACCELERATORS = defaults.ACCELS


@dataclass(frozen=True)
class HostInfo:
    """The facts the QEMU command line depends on (so it can stay a pure function)."""

    system: str  # "darwin" or "linux"
    arch: str  # the guest's arch: "x86_64" or "aarch64" (the host's own unless emulated)
    accel: str  # "hvf", "kvm" or "tcg"
    firmware: Path | None = None  # UEFI code for aarch64 guests; None on x86_64 (SeaBIOS)


def qemu_binary(arch: str) -> str:
    """qemu-system-<arch>, or a clear error that says how to install it."""
    name = f"qemu-system-{arch}"
    found = shutil.which(name)
    if not found:
        hint = "brew install qemu" if sys.platform == "darwin" else f"apt install {_deb(arch)}"
        raise AqError(f"{name} was not found", hint=f"install QEMU ({hint})")
    return found


def _deb(arch: str) -> str:
    return "qemu-system-x86" if arch == "x86_64" else "qemu-system-arm"


def kvm_usable() -> bool:
    """Whether this process may open /dev/kvm for reading and writing."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


@dataclass(frozen=True)
class AccelChoice:
    accel: str
    note: str | None = None  # one line for the user when aq fell back to TCG


Probe = Callable[[str], probing.Verdict]  # accelerator -> can it run a guest here?


def _trust(_accel: str) -> probing.Verdict:
    return probing.Verdict(True)


def choose_accel(
    system: str,
    requested: str | None = None,
    kvm: bool | None = None,
    arch: str = "x86_64",
    probe: Probe = _trust,
) -> AccelChoice:
    """hvf on macOS, KVM on Linux when it can run a guest, TCG otherwise.

    `requested` (--accel, AQ_ACCEL or `aq config set accel`) wins, but an explicit KVM
    that cannot run a guest is an error with a hint rather than QEMU's own assertion.
    Without a request, KVM that /dev/kvm offers but cannot run a guest (nested
    virtualization) falls back to TCG with a note. `probe` is only asked about KVM on
    x86_64 (the test guest is x86 code); hvf is trusted: QEMU fails clearly without it.
    """
    if requested:
        requested = requested.lower()
        if requested not in ACCELERATORS:
            raise InvalidInput(
                f"unknown accelerator {requested!r}", hint="use one of hvf, kvm, tcg"
            )
        if requested == "kvm" and arch == "x86_64":
            verdict = probe("kvm")
            if not verdict.works:
                raise AqError(
                    f"KVM cannot run a guest on this host ({verdict.reason})",
                    hint="use --accel tcg (or AQ_ACCEL=tcg, or `aq config set accel tcg`)",
                )
        return AccelChoice(requested)
    if system == "darwin":
        return AccelChoice("hvf")
    if not system.startswith("linux") or not (kvm if kvm is not None else kvm_usable()):
        return AccelChoice("tcg")
    verdict = probe("kvm") if arch == "x86_64" else probing.Verdict(True)
    if verdict.works:
        return AccelChoice("kvm")
    note = f"KVM is present but cannot run a guest here ({verdict.reason}); using TCG"
    return AccelChoice("tcg", note if verdict.fresh else None)


def configured_accel() -> str | None:
    """AQ_ACCEL, else `aq config set accel` (the environment wins)."""
    from aq import config

    return config.get("accel")


@cache
def data_dirs(binary: str) -> tuple[Path, ...]:
    """QEMU's own data directories, as `qemu-system-* -L help` lists them."""
    try:
        out = subprocess.run(
            [binary, "-L", "help"], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except OSError:
        return ()
    return tuple(Path(line.strip()).resolve() for line in out.splitlines() if line.strip())


def _descriptor_dirs(binary: str) -> list[Path]:
    dirs = [d / "firmware" for d in data_dirs(binary)]
    dirs += [Path("/etc/qemu/firmware"), Path("/usr/share/qemu/firmware")]
    prefix = Path(binary).resolve().parent.parent
    dirs.append(prefix / "share" / "qemu" / "firmware")
    return dirs


def find_uefi_firmware(binary: str, arch: str) -> Path | None:
    """The UEFI code image for `arch`'s virt machine, from QEMU's firmware descriptors.

    QEMU installs JSON descriptors (share/qemu/firmware/*.json) that name each firmware
    file, its architecture and machines; Homebrew and Debian both ship them. Falls back
    to well-known file names inside QEMU's data directories.
    """
    for folder in _descriptor_dirs(binary):
        if not folder.is_dir():
            continue
        for desc in sorted(folder.glob("*.json")):
            path = _match_descriptor(desc, arch)
            if path is not None:
                return path
    names = {
        "aarch64": ["edk2-aarch64-code.fd", "AAVMF_CODE.fd", "QEMU_EFI.fd"],
        "x86_64": ["edk2-x86_64-code.fd", "OVMF_CODE.fd"],
    }[arch]
    for folder in data_dirs(binary):
        for name in names:
            for candidate in (folder / name, folder.parent / "AAVMF" / name):
                if candidate.is_file():
                    return candidate
    return None


def _match_descriptor(desc: Path, arch: str) -> Path | None:
    try:
        data = json.loads(desc.read_text())
    except (OSError, ValueError):
        return None
    if "uefi" not in data.get("interface-types", []):
        return None
    if any("secure-boot" in f or "enrolled-keys" in f for f in data.get("features", [])):
        return None
    targets = data.get("targets", [])
    if not any(t.get("architecture") == arch for t in targets):
        return None
    mapping = data.get("mapping", {})
    filename = (mapping.get("executable") or {}).get("filename") or mapping.get("filename")
    if filename and Path(filename).is_file():
        return Path(filename)
    return None


def emulated_accel(guest: str, native: str, requested: str | None) -> str | None:
    """TCG when the guest's arch is not the host's (no accelerator runs foreign code);
    None when the guest is native. Asking for another accelerator is refused."""
    if guest == native:
        return None
    if requested and requested.lower() != "tcg":
        raise InvalidInput(
            f"{requested} cannot run an {guest} guest on an {native} host",
            hint="leave --accel out (aq emulates the guest with tcg) or use --accel tcg",
        )
    return "tcg"


def detect(accel: str | None = None, arch: str | None = None) -> HostInfo:
    """Inspect this host: OS, accelerator and firmware for a guest of `arch`.

    `arch` defaults to the host's own; another arch is emulated (TCG). The first time
    KVM is considered on this host and QEMU, a test guest runs (at most PROBE_TIMEOUT
    seconds); the verdict is remembered (aq.qemu.accel). A fallback to TCG is said once,
    in one line on stderr, when it is first found.
    """
    native = host.guest_arch()
    arch = arch or native
    system = "darwin" if sys.platform == "darwin" else "linux"

    def probe(name: str) -> probing.Verdict:
        return probing.remembered(qemu_binary(arch), name)

    chosen = emulated_accel(arch, native, accel)
    if chosen is None:
        choice = choose_accel(system, accel or configured_accel(), arch=arch, probe=probe)
        if choice.note:
            print(f"aq: {choice.note}", file=sys.stderr, flush=True)
        chosen = choice.accel
    firmware = None
    if arch == "aarch64":
        binary = qemu_binary(arch)
        firmware = find_uefi_firmware(binary, arch)
        if firmware is None:
            raise AqError(
                "no UEFI firmware for aarch64 was found in QEMU's installation",
                hint="install QEMU's firmware (brew install qemu; apt install qemu-efi-aarch64)",
            )
    return HostInfo(system=system, arch=arch, accel=chosen, firmware=firmware)
