"""Both guest architectures side by side: base install and boot to ready, per arch.

For each of x86_64 and aarch64, in one fresh aq home and one run: `aq new --arch ARCH`
(the ISO's download and verification, then the whole unattended base install) and
`aq start` until the guest is ready for commands (its first boot, through the
firmware: SeaBIOS and extlinux on x86_64, edk2 and GRUB on aarch64), then `aq stop`.
The guest whose arch is not the host's runs emulated (TCG); the host's own arch runs
with AQ_ACCEL (default tcg here, as these machines' KVM cannot run guests). One VM at
a time. Run: .venv/bin/python bench/arch.py  (about half an hour on 2 TCG cores)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ARCHES = ("x86_64", "aarch64")
INSTALL_TIMEOUT = 3600
BOOT_TIMEOUT = 1500


def _aq(env: dict[str, str], *args: str, timeout: float) -> float:
    """Run aq; the wall time in seconds (raises with aq's stderr when it fails)."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "aq", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    took = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"aq {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return took


def _boot_path(env: dict[str, str], name: str) -> str:
    """How the last start booted, from the history: firmware or direct kernel boot."""
    proc = subprocess.run(
        [sys.executable, "-m", "aq", "history", name, "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    starts = [e["detail"] or "" for e in json.loads(proc.stdout or "[]") if e["event"] == "start"]
    detail = starts[-1] if starts else ""
    return "firmware" if "firmware boot" in detail else "direct" if "direct" in detail else "?"


def measure(env: dict[str, str], arch: str) -> tuple[float, float, str]:
    name = f"bench-{arch.replace('_', '-')}"  # VM names are hostname labels
    install = _aq(env, "new", name, "--arch", arch, "--cpus", "1", timeout=INSTALL_TIMEOUT)
    try:
        boot = _aq(env, "start", name, "--timeout", str(BOOT_TIMEOUT), timeout=BOOT_TIMEOUT + 60)
        path = _boot_path(env, name)
    finally:
        subprocess.run(
            [sys.executable, "-m", "aq", "stop", name, "--timeout", "300"],
            cwd=REPO,
            env=env,
            capture_output=True,
            timeout=600,
        )
    return install, boot, path


def main() -> int:
    from aq import host
    from tests.mirror import build_mirror, start_server

    tree = build_mirror()
    server, url = start_server(tree.root)
    results: dict[str, tuple[float, float, str]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="aq-bench-arch-") as home:
            env = {
                **os.environ,
                "AQ_HOME": home,
                "AQ_MIRROR": url,
                "AQ_TRUSTED_KEY": str(tree.public_key),
                "AQ_ACCEL": os.environ.get("AQ_ACCEL", "tcg"),
            }
            for arch in ARCHES:
                print(f"{arch}: installing the base, then booting (minutes)...", flush=True)
                results[arch] = measure(env, arch)
                install, boot, path = results[arch]
                print(f"{arch}: install {install:.1f} s, boot to ready {boot:.1f} s ({path})")
    finally:
        server.stop()
    native = host.guest_arch()
    print(f"\nhost: {native}; accel: tcg for every guest here (emulated when not {native})")
    print(f"{'guest':<10} {'install (s)':>12} {'boot to ready (s)':>18} {'boot path':>10}")
    for arch, (install, boot, path) in results.items():
        print(f"{arch:<10} {install:>12.1f} {boot:>18.1f} {path:>10}")
    x86, arm = results["x86_64"], results["aarch64"]
    print(f"aarch64 / x86_64: install x{arm[0] / x86[0]:.2f}, boot x{arm[1] / x86[1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
