"""Installing Alpine onto a base disk, unattended, by driving the serial console.

aq boots the verified ISO's kernel and initramfs with a blank qcow2 as /dev/vda, logs
in as root on the serial console, hands over an answer file, runs
`setup-alpine -e -f`, adds what aq needs to the installed system (aq/guest/postinstall.sh)
and powers off. The finished disk becomes a read-only base image that every VM overlays.
The whole console conversation is kept in a transcript beside the image.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from aq import defaults, paths, sshkeys
from aq.console.expect import Console, ConsoleError, transcript_tail
from aq.errors import AqError
from aq.guest import bootconfig
from aq.images import answers, basekernel, catalog, iso
from aq.images.releases import ReleaseInfo
from aq.images.verify import sha256_file
from aq.progress import Progress
from aq.qemu import cmdline, img
from aq.qemu.hostinfo import HostInfo, qemu_binary
from aq.store.db import writing
from aq.store.models import Image

BASE_DISK_SIZE = 2 << 30
INSTALL_MEMORY_MIB = 1024
BASE_HOSTNAME = "alpine"


@dataclass(frozen=True)
class Timeouts:
    """Seconds for each phase; generous because TCG and real downloads are slow."""

    boot: float = 600
    setup: float = 1800
    postinstall: float = 900
    poweroff: float = 180


def transcript_path(version: str, arch: str) -> Path:
    return paths.base_transcript(version, arch)


def _installer_cpus(host: HostInfo) -> int:
    # A new VM's default, capped under TCG like every VM's (aq.qemu.cmdline.tcg_cpus).
    return cmdline.tcg_cpus(defaults.CPUS, host.accel)


def _start_qemu(argv: list[str], log: Path) -> subprocess.Popen:
    with paths.open_private(log) as err:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            start_new_session=True,
            umask=paths.PRIVATE_UMASK,
        )


def _stop_qemu(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


SCRATCH_DEVICE = "/dev/vdb"  # the second virtio disk: the scratch disk for /boot


def _converse(con: Console, release: ReleaseInfo, host: HostInfo, t: Timeouts, progress) -> None:
    """The console conversation: log in, install, add aq's setup, power off."""
    tty = cmdline.serial_device(host.arch)
    progress.step("booting the Alpine installer")
    con.login(t.boot)
    con.check("mkdir -p /tmp/aq", 60, "make a work folder")
    repository = f"{release.mirror}/{release.branch}/main"
    answer_file = answers.render(
        answers.Answers(BASE_HOSTNAME, sshkeys.authorized_keys(), repository)
    )
    con.write_file("/tmp/aq/answers", answer_file.encode())
    for name in ("postinstall.sh", "agent-bootstrap.sh", "aq-guest.init"):
        con.write_file(f"/tmp/aq/{name}", (paths.GUEST_FILES / name).read_bytes(), 0o755)
    progress.step(f"installing Alpine {release.version} with setup-alpine")
    token = "setup"
    command = "ERASE_DISKS=/dev/vda setup-alpine -e -f /tmp/aq/answers"
    con.note(f"> {command}")
    con.sendline(f"{command}; printf 'AQ-RC:%s:%s\\n' {token} $?", quiet=True)
    done = re.compile(rb"AQ-RC:setup:(\d+)\n")
    question = re.compile(rb"\(y/n\) \[[yn]\]:? ?$", re.M)
    while True:
        match = con.expect([done, question], t.setup, "finish setup-alpine")
        if match.re is question:
            con.sendline("y")
            continue
        if match.group(1) != b"0":
            raise ConsoleError(
                f"setup-alpine failed (exit status {match.group(1).decode()}); "
                f"last console lines:\n{transcript_tail(con.transcript)}\n"
                f"(full transcript: {con.transcript})"
            )
        break
    progress.step("adding aq's guest setup to the installed system")
    con.check(
        f"sh /tmp/aq/postinstall.sh {tty} {SCRATCH_DEVICE}",
        t.postinstall,
        "finish aq's post-install",
    )
    con.sendline("sync; poweroff")


def install_base(
    release: ReleaseInfo,
    iso_image: Image,
    host: HostInfo,
    progress: Progress,
    timeouts: Timeouts = Timeouts(),
) -> Image:
    """Install `release` from `iso_image` onto a new base disk; record and return it."""
    paths.make_private_dir(paths.images_dir())
    final = paths.base_image(release.version, host.arch)
    transcript = paths.base_transcript(release.version, host.arch)
    work = paths.base_workdir(release.version, host.arch)
    shutil.rmtree(work, ignore_errors=True)
    paths.make_private_dir(work)
    files = paths.VmFiles(work)  # the installer's QEMU keeps its files as a VM's do
    transcript.unlink(missing_ok=True)
    try:
        target = files.disk
        img.create_blank(target, BASE_DISK_SIZE)
        scratch = basekernel.make_scratch(work / "boot.tar")
        tty = cmdline.serial_device(host.arch)
        kernel, initrd, args = iso.extract_boot(Path(iso_image.path), work, host.arch, tty)
        spec = cmdline.MachineSpec(
            name="aq-installer",
            cpus=_installer_cpus(host),
            memory_mib=INSTALL_MEMORY_MIB,
            disks=[(target, "qcow2"), (scratch, "raw")],
            sockets=cmdline.Sockets(
                console=Path(paths.short_socket_path(files.console)),
                console_log=files.console_log,
            ),
            cdrom=Path(iso_image.path),
            kernel=kernel,
            initrd=initrd,
            append=args,
            no_reboot=True,
        )
        argv = cmdline.build(spec, host)
        argv[0] = qemu_binary(host.arch)
        paths.write_private(files.cmdline, " ".join(argv) + "\n")
        proc = _start_qemu(argv, files.stderr)

        def why_dead() -> str | None:
            if proc.poll() is None:
                return None
            said = files.stderr.read_text(errors="replace").strip()
            return f"QEMU exited (status {proc.returncode}): {said or 'no message'}"

        try:
            with Console.connect(files.console, transcript, why_dead=why_dead) as con:
                _converse(con, release, host, timeouts, progress)
                # Stay connected while it shuts down: the transcript gets the whole story.
                con.drain(timeouts.poweroff, lambda: proc.poll() is not None)
            try:
                code = proc.wait(10)
            except subprocess.TimeoutExpired:
                raise AqError(
                    f"the installer did not power off within {timeouts.poweroff:.0f}s",
                    hint=f"see the transcript: {transcript}",
                ) from None
        except ConsoleError as err:
            if proc.poll() is not None:
                stderr = files.stderr.read_text(errors="replace").strip()
                if stderr:
                    err.message += f"\nQEMU said: {stderr.splitlines()[-1]}"
            raise
        finally:
            _stop_qemu(proc)
        if code != 0:
            stderr = files.stderr.read_text(errors="replace").strip()
            raise AqError(f"QEMU exited with status {code} during the install: {stderr}")
        progress.step("recording the base image")
        _capture_kernel(scratch, paths.boot_copy_of(final), host.arch, transcript)
        digest = sha256_file(target)
        target.chmod(0o444)
        target.replace(final)
        with writing() as session:
            return catalog.register(
                session,
                kind="base",
                path=final,
                fmt="qcow2",
                version=release.version,
                arch=host.arch,
                size=final.stat().st_size,
                sha256=digest,
                disk_size=BASE_DISK_SIZE,
                source=session.get(Image, iso_image.id),
                iso_sha256=iso_image.sha256,
            )
    except BaseException:
        if final.exists() and not _recorded(final):
            final.unlink()
        if not final.exists():
            shutil.rmtree(paths.boot_copy_of(final), ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _capture_kernel(scratch: Path, dest: Path, arch: str, transcript: Path) -> None:
    """Keep the base's kernel for new VMs' direct first boot; without it they boot
    through the firmware the first time, so a failure here only goes in the transcript."""
    import tarfile

    try:
        basekernel.capture(scratch, dest, arch)
    except (bootconfig.Unsupported, tarfile.TarError, OSError) as err:
        with paths.open_private(transcript, append=True) as out:
            out.write(f"\naq: no copy of the base's kernel for direct boot: {err}\n".encode())


def _recorded(path: Path) -> bool:
    from sqlalchemy import select

    from aq.store.db import reading

    with reading() as session:
        return session.scalars(select(Image.id).where(Image.path == str(path))).first() is not None
