"""A program that makes the guest kernel's RNG reseed itself now (RNDRESEEDCRNG).

A clone of a live snapshot resumes with its source's RNG state, and so does every
other clone of it. aq writes host entropy to the clone's /dev/urandom (aq.identity),
but Linux only mixes such writes into its input pool: the generator reads it at its
next reseed, up to a minute later (the interval runs on jiffies, which a resumed
guest carries over). QEMU's vmgenid device makes the kernel reseed at once, but only
x86's `pc` machine has it: arm's virt machine has none. The ioctl does the same from
userland, on either; busybox has no way to issue it, so this static program of about
180 bytes does (aq.tinyelf). It exits 0 once reseeded, else with the errno.
"""

from __future__ import annotations

from aq import tinyelf

PATH = b"/dev/urandom\0"
PATH_SOURCE = """
path:
    .asciz  "/dev/urandom"
"""

X86_64_SOURCE = (
    """
_start:
    mov     $2, %eax                # open("/dev/urandom", O_WRONLY)
    lea     path(%rip), %rdi
    mov     $1, %esi
    syscall
    mov     %eax, %edi
    test    %eax, %eax
    js      done                    # not opened: exit with its errno
    mov     $16, %eax               # ioctl(fd, RNDRESEEDCRNG)
    mov     $0x5207, %esi
    syscall
    mov     %eax, %edi
done:
    neg     %edi                    # exit(-result): 0 once reseeded, else the errno
    mov     $60, %eax
    syscall
"""
    + PATH_SOURCE
)

AARCH64_SOURCE = (
    """
_start:
    mov     x0, #-100               // openat(AT_FDCWD, "/dev/urandom", O_WRONLY)
    adr     x1, path
    mov     x2, #1
    mov     x8, #56
    svc     #0
    tbnz    x0, #63, done           // not opened: exit with its errno
    mov     x1, #0x5207             // ioctl(fd, RNDRESEEDCRNG)
    mov     x8, #29
    svc     #0
done:
    neg     x0, x0                  // exit(-result): 0 once reseeded, else the errno
    mov     x8, #93
    svc     #0
"""
    + PATH_SOURCE
)

X86_64_CODE = (
    bytes.fromhex(
        "b802000000488d3d24000000be010000000f05"  # open
        "89c785c0780e"  # not opened: done
        "b810000000be075200000f0589c7"  # ioctl
        "f7dfb83c0000000f05"  # done: exit(-result)
    )
    + PATH
)

AARCH64_CODE = (
    bytes.fromhex(
        "600c809261010010220080d2080780d2010000d4"  # openat
        "8000f8b7"  # not opened: done
        "e1408ad2a80380d2010000d4"  # ioctl
        "e00300cba80b80d2010000d4"  # done: exit(-result)
    )
    + PATH
)

CODES = {"x86_64": X86_64_CODE, "aarch64": AARCH64_CODE}  # by the guest's architecture


def program(arch: str) -> bytes:
    """The executable for a guest of this architecture ("x86_64" or "aarch64")."""
    return tinyelf.executable(arch, CODES[arch])


def printf_format(data: bytes) -> str:
    """`data` as a printf format of octal escapes only: `printf "$f" > file` in the
    guest's shell writes it byte for byte (no %, no backslash of its own)."""
    return "".join(f"\\{byte:03o}" for byte in data)
