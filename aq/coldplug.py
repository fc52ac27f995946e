"""Narrow the initramfs's device helper when the guest's own device manager redoes its work.

Alpine's initramfs finds the root filesystem with nlplug-findfs, which replays every
device event, runs /sbin/mdev for each one that names a device node (148 in a small
VM) and waits for all of them, even after the root is found. Each mdev parses
Alpine's 160-line mdev.conf again: about 50 ms under TCG, so `Mounting root` takes
9-11 s of a 40-50 s boot, and about 6 s with the helper below (bench/BOOT-STALLS.md,
seventh pass). The initramfs itself needs none of it:
devtmpfs already holds every node, and mdev only sets owners, modes and links and
runs its scripts.

A guest whose sysinit runlevel starts a device manager that replays every device
event again (Alpine's mdev, which setup-alpine enables, or mdevd or udev) applies the
same rules to the same devtmpfs a few seconds later. One thing it cannot redo: the
links mdev's persistent-storage script makes for block devices with the initramfs's
util-linux blkid (/dev/disk/by-partuuid), which an installed Alpine lacks (busybox's
blkid reports no PARTUUID). So for such a guest a direct boot appends a small archive
to its initramfs whose /sbin/mdev hands block devices to mdev and ends at once for
everything else; its /dev then ends up the same as after a firmware boot (compared
node by node in tests/test_e2e_lifecycle.py). A guest without such a service boots
its initramfs unchanged.

nlplug-findfs runs its helper for one event at a time, about 110 of them before the
root disk's. A shell script as the helper costs about 22 ms an event under TCG (a
dynamically linked busybox started, then a script read); for x86-64 guests the helper
is a 120-byte static program instead (X86_64_SOURCE, its listing), which costs a fork
and an exec: the root filesystem is mounted about 2 s sooner (bench/BOOT-STALLS.md,
eighth pass). Other architectures get the script, whose cost is small where they run
with an accelerator.
"""

from __future__ import annotations

import gzip
import struct

# Services that replay every device event when sysinit starts them: busybox mdev
# (`mdev -s`), mdevd's coldplug, udev's trigger.
COLDPLUG_SERVICES = frozenset({"mdev", "mdevd-init", "udev-trigger"})

# The helper's stand-in, a regular file: the kernel's initramfs unpacker replaces an
# existing file with one of another type, but keeps an existing symlink (/sbin/mdev is
# one, to busybox) when the new entry is a symlink too. Busybox's sh and mdev are
# there in every mkinitfs initramfs; a shell's start costs about half an mdev's.
HELPER = b"""#!/bin/sh
# aq: this guest's sysinit redoes /dev; only block devices' links need the initramfs.
[ "$SUBSYSTEM" = block ] && exec /bin/busybox mdev "$@"
exit 0
"""


# The same helper as a static x86-64 Linux program, position-independent: if the
# environment holds exactly SUBSYSTEM=block, execve("/bin/busybox", ["mdev"], envp),
# else (or if that fails) exit(0). tests/test_coldplug.py assembles this listing with
# binutils and checks that X86_64_CODE is its output, byte for byte.
X86_64_SOURCE = """
_start:
    mov     (%rsp), %rcx            # argc
    lea     16(%rsp,%rcx,8), %r8    # envp: past argc, the arguments and their NULL
    mov     %r8, %rdx
next:                               # each "NAME=value" of the environment in turn
    mov     (%rdx), %rsi
    test    %rsi, %rsi
    jz      done                    # none left: not a block device
    add     $8, %rdx
    lea     want(%rip), %rdi
same:                               # equal to want, its NUL included?
    mov     (%rdi), %al
    cmp     (%rsi), %al
    jne     next
    inc     %rsi
    inc     %rdi
    test    %al, %al
    jnz     same
    push    $0                      # argv: {"mdev", NULL}
    lea     mdev(%rip), %rax
    push    %rax
    mov     %rsp, %rsi
    mov     %r8, %rdx               # the event's own environment
    lea     busybox(%rip), %rdi
    mov     $59, %eax               # execve
    syscall
done:                               # also where a failed execve lands
    mov     $60, %eax               # exit(0)
    xor     %edi, %edi
    syscall
want:
    .asciz  "SUBSYSTEM=block"
busybox:
    .asciz  "/bin/busybox"
mdev:
    .asciz  "mdev"
"""
X86_64_CODE = (
    bytes.fromhex(
        "488b0c244c8d44cc104c89c2488b32"  # argc, envp; next: the next variable
        "4885f67439"  # none left: done
        "4883c208488d3d37000000"  # want
        "8a073a0675e748ffc648ffc784c075f0"  # same: compare up to want's NUL
        "6a00488d053b0000005048"  # argv = ["mdev", NULL] on the stack
        "89e64c89c2488d3d20000000b83b0000000f05"  # execve
        "b83c00000031ff0f05"  # done: exit(0)
    )
    + b"SUBSYSTEM=block\0/bin/busybox\0mdev\0"
)
LOAD_ADDRESS = 0x400000


def _elf_x86_64(code: bytes) -> bytes:
    """A minimal ELF executable: the header, one loadable read+execute segment holding
    the whole file, the code right after the two headers (no sections)."""
    header_size, segment_size = 64, 56
    size = header_size + segment_size + len(code)
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)  # 64-bit, little-endian, version 1
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH",
        2,  # ET_EXEC
        62,  # EM_X86_64
        1,
        LOAD_ADDRESS + header_size + segment_size,  # the entry point: the code's start
        header_size,  # the segment table follows this header
        0,  # no section table
        0,
        header_size,
        segment_size,
        1,
        0,
        0,
        0,
    )
    segment = struct.pack(
        "<IIQQQQQQ",
        1,  # PT_LOAD
        5,  # PF_R | PF_X
        0,
        LOAD_ADDRESS,
        LOAD_ADDRESS,
        size,
        size,
        0x1000,
    )
    return header + segment + code


def helper(arch: str) -> bytes:
    """The /sbin/mdev stand-in for a guest of this architecture."""
    return _elf_x86_64(X86_64_CODE) if arch == "x86_64" else HELPER


def replays_devices(sysinit_services) -> bool:
    """Whether a guest whose sysinit runlevel holds these services redoes /dev itself."""
    return not COLDPLUG_SERVICES.isdisjoint(sysinit_services)


def _entry(name: str, ino: int, mode: int, data: bytes = b"", nlink: int = 1) -> bytes:
    """One newc cpio entry (the format the kernel unpacks), padded to 4 bytes."""
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
    header = b"070701" + "".join(f"{v:08X}" for v in fields).encode() + encoded
    header += b"\0" * (-len(header) % 4)
    return header + data + b"\0" * (-len(data) % 4)


def overlay(arch: str) -> bytes:
    """A gzip'd cpio archive to append to an initramfs: its /sbin/mdev is helper(arch).

    The kernel unpacks archives one after the other into the same root, a later file
    replacing an earlier one; after a compressed archive, only a compressed one is
    accepted. Always the same bytes (no timestamps), so a copy's contents are stable."""
    archive = (
        _entry("sbin", 1, 0o040755, nlink=2)
        + _entry("sbin/mdev", 2, 0o100755, helper(arch))
        + _entry("TRAILER!!!", 0, 0)
    )
    return gzip.compress(archive, mtime=0)


def initrd_tail(replays: bool, arch: str) -> bytes:
    """What follows the guest's own initramfs files in aq's copy: the overlay when the
    guest redoes /dev itself, else nothing."""
    return overlay(arch) if replays else b""
