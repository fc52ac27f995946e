"""Every name aq gives to something on disk, in one place.

AQ_HOME overrides the data directory; otherwise it follows the platform's convention
(~/Library/Application Support/aq on macOS, $XDG_DATA_HOME/aq or ~/.local/share/aq on
Linux). Every directory aq makes is private to its owner (0700).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections import namedtuple
from pathlib import Path

DB_NAME = "aq.db"
ACCEL_CACHE = "accel-probe.json"
MACHINE_CACHE = "qemu-machines.json"
# The scripts and services aq hands to guests, shipped inside the package.
GUEST_FILES = Path(__file__).resolve().parent / "guest"
# The command channel's streams per slot: control, stdout, stderr.
EXEC_STREAMS = ("ctl", "out", "err")
# Unix socket paths are limited to 104 bytes on macOS and 108 on Linux.
MAX_SOCKET_PATH = 100


def home() -> Path:
    """The data directory: $AQ_HOME, else the platform's user data directory."""
    override = os.environ.get("AQ_HOME")
    if override:
        return Path(override).expanduser().absolute()
    from platformdirs import user_data_dir

    return Path(user_data_dir("aq", appauthor=False))


def make_private_dir(path: Path) -> Path:
    """Create `path` (and parents) readable by the owner only; return it.

    An existing `path` must be a real directory of ours: a symlink or another user's
    folder could send aq's files (sockets, keys, disks) somewhere someone else controls.
    """
    with contextlib.suppress(FileExistsError):  # checked below, symlinks included
        path.mkdir(mode=0o700, parents=True)
    info = _own_directory(path, "remove it, or choose another AQ_HOME")
    if info.st_mode & 0o077:
        path.chmod(0o700)
    return path


def _own_directory(path: Path, hint: str) -> os.stat_result:
    """The lstat of `path`, or AqError unless it is a directory (not a symlink) of ours."""
    from aq.errors import AqError

    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise AqError(f"{path} is not a directory (a symlink or a file?)", hint=hint)
    if info.st_uid != os.getuid():
        raise AqError(f"{path} belongs to another user (uid {info.st_uid})", hint=hint)
    return info


PRIVATE_UMASK = 0o077  # for QEMU: its sockets, pid file and logs, owner only


def open_private(path: Path, append: bool = False):
    """Open `path` for binary writing, created readable by the owner only (logs)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
    return os.fdopen(os.open(path, flags, 0o600), "ab" if append else "wb")


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, created readable by the owner only."""
    with open_private(path) as out:
        out.write(text.encode())


def restrict_to_owner(folder: Path) -> None:
    """Take group and other permissions off the files in `folder`: QEMU's daemon runs
    with its own umask (027), so the sockets it binds would otherwise be group-readable."""
    for entry in folder.iterdir():
        try:
            mode = entry.lstat().st_mode
            if mode & 0o077 and not stat.S_ISLNK(mode):
                entry.chmod(stat.S_IMODE(mode) & 0o700)
        except FileNotFoundError:
            pass


def db_path() -> Path:
    return home() / DB_NAME


def accel_cache() -> Path:
    """Which accelerators were seen to work on this host (aq.qemu.accel)."""
    return home() / ACCEL_CACHE


def machine_cache() -> Path:
    """What each QEMU binary's machine aliases mean ('pc' -> 'pc-i440fx-7.2'), learned
    once per binary (aq.savedstate.resolve_machine)."""
    return home() / MACHINE_CACHE


def migration_lock() -> Path:
    return home() / "aq.db.migrate.lock"


def vms_dir() -> Path:
    return home() / "vms"


def tombstone(vm_id: int, token: str) -> Path:
    """Where a removed VM's folder waits to be deleted; no VM name can reach it."""
    return vms_dir() / f".removed-{vm_id}-{token}"


def images_dir() -> Path:
    return home() / "images"


def iso_file(version: str, arch: str) -> Path:
    """Where the verified ISO of an Alpine release is kept (never a mirror's own name)."""
    return images_dir() / f"alpine-virt-{version}-{arch}.iso"


def part_file(path: Path) -> Path:
    """The unverified download of `path`: private, and removed on any failure."""
    return path.with_name(path.name + ".part")


def release_lock(version: str, arch: str) -> Path:
    """Held while one release is downloaded and installed, so it happens once."""
    return images_dir() / f"alpine-{version}-{arch}.lock"


def inside_images(path: Path | str) -> Path:
    """`path` resolved, or ValueError unless it lies under AQ_HOME/images: aq writes
    and deletes image files only there, whatever a mirror or a database row says."""
    folder = images_dir().resolve()
    resolved = Path(path).resolve()
    if resolved == folder or not resolved.is_relative_to(folder):
        raise ValueError(f"{path} is not inside {folder}")
    return resolved


def snapshot_disk(tag: str, token: str) -> Path:
    """A snapshot's frozen disk (read-only once made)."""
    return images_dir() / f"snapshot-{tag}-{token}.qcow2"


def snapshot_memory(disk: Path) -> Path:
    """A live snapshot's memory and device state, beside its disk."""
    return disk.with_suffix(".state")


def base_stem(version: str, arch: str) -> str:
    """The name shared by a release's base disk, its transcript and its work folder."""
    return f"alpine-{version}-{arch}-base"


def base_image(version: str, arch: str) -> Path:
    return images_dir() / f"{base_stem(version, arch)}.qcow2"


def base_transcript(version: str, arch: str) -> Path:
    """The whole console conversation of a base install."""
    return transcript_of(base_image(version, arch))


def transcript_of(base: Path) -> Path:
    """The install transcript kept beside a base disk."""
    return base.with_name(base.stem + ".install.log")


def boot_copy_of(base: Path) -> Path:
    """The base's own kernel, initramfs and command line, kept beside its disk
    (aq.images.basekernel): a new VM takes them for its first, direct boot."""
    return base.with_name(base.stem + ".boot")


def base_workdir(version: str, arch: str) -> Path:
    """Scratch space of a base install in progress (hidden; removed when it ends)."""
    return images_dir() / f".{base_stem(version, arch)}.work"


def keys_dir() -> Path:
    return home() / "keys"


def aq_key() -> Path:
    """aq's own SSH private key; its public half is `public_key(aq_key())`."""
    return keys_dir() / "id_ed25519"


def public_key(private: Path) -> Path:
    return private.with_name(private.name + ".pub")


def keygen_lock() -> Path:
    return keys_dir() / "keygen.lock"


def keygen_tmp() -> Path:
    """Where ssh-keygen writes before the pair is moved into place."""
    return keys_dir() / ".id_ed25519.tmp"


# Value types on `aq exec`'s path are plain collections.namedtuple classes: importing
# dataclasses (and with it inspect) costs about 8 ms of a run that should take a few
# times an interpreter start, and typing.NamedTuple imports typing (about 3 ms).
class VmFiles(namedtuple("VmFiles", "root")):
    """The files of one VM, all inside its own folder (`root`, a Path)."""

    __slots__ = ()

    @property
    def disk(self) -> Path:
        return self.root / "disk.qcow2"

    @property
    def pidfile(self) -> Path:
        return self.root / "qemu.pid"

    @property
    def qmp(self) -> Path:
        return self.root / "qmp.sock"

    @property
    def console(self) -> Path:
        return self.root / "console.sock"

    @property
    def console_log(self) -> Path:
        return self.root / "console.log"

    @property
    def console_log_old(self) -> Path:
        """The previous console.log, moved aside when it grew past its limit."""
        return self.root / "console.log.1"

    @property
    def console_lock(self) -> Path:
        return self.root / "console.lock"

    @property
    def cmdline(self) -> Path:
        """The QEMU command line of the last start, kept for diagnosis."""
        return self.root / "qemu.cmdline"

    @property
    def stderr(self) -> Path:
        """QEMU's own stderr of the last start, kept for diagnosis."""
        return self.root / "qemu.stderr"

    @property
    def fw_boot(self) -> Path:
        """The per-VM boot script handed to the guest through fw_cfg."""
        return self.root / "guest-boot.sh"

    @property
    def fw_agent(self) -> Path:
        """The command-channel agent handed to the guest through fw_cfg."""
        return self.root / "guest-agent.sh"

    @property
    def boot_copy(self) -> Path:
        """The VM's own kernel, initramfs and command line, for direct boot (aq.bootcopy)."""
        return self.root / "boot"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    def exec_socket(self, slot: int, stream: str) -> Path:
        """One of the command channel's sockets: slot N, one of EXEC_STREAMS."""
        return self.root / f"exec{slot}.{stream}.sock"

    def exec_lock(self, slot: int) -> Path:
        return self.root / f"exec{slot}.lock"

    @property
    def saved_state(self) -> Path:
        """`aq suspend`'s memory and device state (a QEMU migration stream)."""
        return self.root / "saved.state"

    @property
    def saved_state_part(self) -> Path:
        """A saved state being written; it never counts until renamed to saved_state."""
        return self.root / "saved.state.part"

    def disk_next(self, token: str) -> Path:
        """A live snapshot's new overlay, until it takes disk.qcow2's name (unique per
        snapshot: QEMU refuses to create a file named as its backing file)."""
        return self.root / f"disk.next-{token}.qcow2"

    @property
    def state_lock(self) -> Path:
        """Held while a suspend or snapshot works on this VM (one at a time)."""
        return self.root / "state.lock"


def vm_files(name: str) -> VmFiles:
    return VmFiles(vms_dir() / name)


def short_socket_path(path: Path) -> str:
    """A path to `path` short enough for a unix socket address.

    Long data directories (macOS's "Application Support", deep AQ_HOMEs) can push socket
    paths past the kernel's limit; a private symlink to the socket's folder in the temp
    directory keeps the address short while the socket itself stays in the VM's folder.
    """
    text = str(path)
    if len(text.encode()) <= MAX_SOCKET_PATH:
        return text
    import hashlib  # only here: `aq exec`'s short path imports neither
    import tempfile

    digest = hashlib.sha256(str(path.parent).encode()).hexdigest()[:16]
    links = Path(tempfile.gettempdir()) / f"aq-{os.getuid()}"
    # A shared temp directory: whoever made aq-UID first owns it, so trust it only if it
    # is our own private directory; never repair it (it may hold someone's symlinks).
    with contextlib.suppress(FileExistsError):
        links.mkdir(mode=0o700)
    hint = "remove it, or set TMPDIR to a private directory"
    if _own_directory(links, hint).st_mode & 0o077:
        from aq.errors import AqError

        raise AqError(f"{links} is open to other users", hint=hint)
    link = links / digest
    if not _our_link_to(link, path.parent):
        tmp = links / f".{digest}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(path.parent)
        tmp.replace(link)
    return str(link / path.name)


def _our_link_to(link: Path, target: Path) -> bool:
    """Whether `link` is a symlink of ours to `target` (else it is replaced)."""
    try:
        info = os.lstat(link)
    except FileNotFoundError:
        return False
    return (
        stat.S_ISLNK(info.st_mode)
        and info.st_uid == os.getuid()
        and os.readlink(link) == str(target)
    )
