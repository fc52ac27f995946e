"""The Alpine userland the ISO's live system and the installed system are made from
(see the package's build.py docstring for every change and why)."""

from __future__ import annotations

import base64
import hashlib
import shutil
from pathlib import Path

from .release import ArchSpec

# Modules nothing loads by modalias but the guest needs (acpid reads the power
# button through evdev; mounting the ISO needs isofs; the installed root is ext4;
# af_packet/ipv6 are Alpine's own defaults and stay listed above these).
EXTRA_MODULES = ["evdev", "isofs", "ext4"]

HERE = Path(__file__).resolve().parent
SETUP_ALPINE = HERE / "setup-alpine"
MDEV_SERVICE = HERE / "mdev.initd"


def _apk_checksums(root: Path) -> dict[str, str]:
    """path -> apk's 'Q1<base64 sha1>' checksum, from the installed-packages database."""
    sums: dict[str, str] = {}
    folder = path = None
    for line in (root / "lib/apk/db/installed").read_text().splitlines():
        if line.startswith("F:"):
            folder = line[2:]
        elif line.startswith("R:"):
            path = f"{folder}/{line[2:]}"
        elif line.startswith("Z:") and path:
            sums[path] = line[2:]
            path = None
    return sums


def _restore_alpine_default(root: Path, rel: str, text: str, sums: dict[str, str]) -> None:
    got = "Q1" + base64.b64encode(hashlib.sha1(text.encode()).digest()).decode()
    if sums.get(rel) != got:
        raise RuntimeError(f"/{rel}: reconstructed default does not match apk's checksum")
    p = root / rel
    p.write_text(text)
    p.chmod(0o644)


def _drop_lines(path: Path, prefix: str) -> None:
    if path.exists():
        keep = [ln for ln in path.read_text().splitlines(True) if not ln.startswith(prefix)]
        path.write_text("".join(keep))


def make_base(root: Path) -> None:
    """The userland both the live system and the installed system start from."""
    sums = _apk_checksums(root)
    # quicksand's additions (not Alpine's)
    for rel in (
        ".dockerenv",
        "dev/console",
        "etc/init.d/quicksand-guest-agent",
        "usr/local/bin/quicksand-guest-agent",
        "etc/runlevels/boot/quicksand-guest-agent",
        "etc/init.d/setup-dns",
        "etc/runlevels/sysinit/setup-dns",
        "etc/resolv.conf.quicksand",
        "etc/resolv.conf",
        "etc/sudoers.d/quicksand",
        "etc/network/interfaces",
        "etc/runlevels/boot/networking",
    ):
        p = root / rel
        if p.is_symlink() or p.exists():
            p.unlink()
    shutil.rmtree(root / "home" / "quicksand", ignore_errors=True)
    for rel in ("passwd", "passwd-", "shadow", "shadow-", "group", "group-"):
        _drop_lines(root / "etc" / rel, "quicksand:")

    # Alpine's own defaults, checked against apk's database
    rc_conf = (root / "etc/rc.conf").read_text()
    for now, default in (
        ('rc_parallel="YES"\n', '#rc_parallel="NO"\n'),
        ('rc_sys="lxc"\n', '#rc_sys=""\n'),
        ('rc_controller_cgroups="NO"\n', '#rc_controller_cgroups="YES"\n'),
    ):
        rc_conf = rc_conf.replace(now, default, 1)
    _restore_alpine_default(root, "etc/rc.conf", rc_conf, sums)
    _restore_alpine_default(root, "etc/hostname", "localhost\n", sums)
    _restore_alpine_default(
        root,
        "etc/hosts",
        "127.0.0.1\tlocalhost localhost.localdomain\n::1\t\tlocalhost localhost.localdomain\n",
        sums,
    )
    _restore_alpine_default(root, "etc/modules", "af_packet\nipv6\n", sums)

    # The fixture's configuration (see the module docstring)
    with open(root / "etc/modules", "a") as f:
        f.write("# aq test mirror: modules no device's modalias loads\n")
        f.write("".join(m + "\n" for m in EXTRA_MODULES))
    mdev = root / "etc/init.d/mdev"
    shutil.copyfile(MDEV_SERVICE, mdev)
    mdev.chmod(0o755)
    _rc_add(root, "mdev", "sysinit")
    _rc_add(root, "hwdrivers", "sysinit")


def _rc_add(root: Path, service: str, runlevel: str) -> None:
    if not (root / "etc/init.d" / service).exists():
        raise RuntimeError(f"no service {service} in the userland")
    link = root / "etc/runlevels" / runlevel / service
    if not link.is_symlink():
        link.symlink_to(f"/etc/init.d/{service}")


def make_live(root: Path, spec: ArchSpec) -> None:
    """Turn the base userland (in place) into the ISO's live system."""
    (root / "init").symlink_to("/sbin/init")
    shadow = root / "etc/shadow"
    lines = shadow.read_text().splitlines(True)
    lines = ["root::" + ln.split(":", 2)[2] if ln.startswith("root:") else ln for ln in lines]
    shadow.write_text("".join(lines))
    with open(root / "etc/inittab", "a") as f:
        f.write(spec.serial_getty + "\n")
    for script in (SETUP_ALPINE, HERE / "setup-alpine-efi"):
        dst = root / "sbin" / script.name
        shutil.copyfile(script, dst)
        dst.chmod(0o755)
