"""The program aq puts in place of the initramfs's /sbin/mdev (see aq.coldplug).

It does what this shell script would:

    [ "$DEVTYPE" = partition ] && exec /sbin/aq-partition
    exit 0

but as a static program of about 240 bytes for each architecture aq runs. The
initramfs's nlplug-findfs runs its helper for one device event at a time, about 110 of
them before the root disk's, and under TCG the script cost 22 ms an event (a
dynamically linked busybox started, then the script read): 2 s of every boot. The
program costs a fork and an exec (bench/BOOT-STALLS.md, eighth pass). A partition's
event goes on to aq.coldplug's PARTITION_SCRIPT, which sits beside it in the same
archive (its path is SCRIPT here).

The machine code is kept beside its assembly listing; tests/test_blockhelper.py
assembles each listing with binutils and checks the bytes, then runs each program
(the aarch64 one under qemu-user) with and without a partition's environment.
"""

from __future__ import annotations

from aq import tinyelf

SCRIPT = "/sbin/aq-partition"  # where aq.coldplug puts the partitions' script

# The strings both programs use, after their code: the listing and its bytes.
DATA_SOURCE = """
want:
    .asciz  "DEVTYPE=partition"
script:
    .asciz  "/sbin/aq-partition"
mdev:
    .asciz  "mdev"
"""
STRINGS = b"DEVTYPE=partition\0/sbin/aq-partition\0mdev\0"

# Both programs: if the environment holds exactly DEVTYPE=partition,
# execve(SCRIPT, ["mdev", NULL], envp); else, or if that fails, exit(0).
# Position-independent, so they run wherever they are loaded.
X86_64_SOURCE = (
    """
_start:
    mov     (%rsp), %rcx            # argc
    lea     16(%rsp,%rcx,8), %r8    # envp: past argc, the arguments and their NULL
    mov     %r8, %rdx
next:                               # each "NAME=value" of the environment in turn
    mov     (%rdx), %rsi
    test    %rsi, %rsi
    jz      done                    # none left: not a partition
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
    lea     script(%rip), %rdi
    mov     $59, %eax               # execve
    syscall
done:                               # also where a failed execve lands
    mov     $60, %eax               # exit(0)
    xor     %edi, %edi
    syscall
"""
    + DATA_SOURCE
)

AARCH64_SOURCE = (
    """
_start:
    ldr     x1, [sp]                // argc
    add     x9, sp, #16
    add     x9, x9, x1, lsl #3      // envp: past argc, the arguments and their NULL
    mov     x2, x9
next:                               // each "NAME=value" of the environment in turn
    ldr     x3, [x2], #8
    cbz     x3, done                // none left: not a partition
    adr     x4, want
same:                               // equal to want, its NUL included?
    ldrb    w5, [x4], #1
    ldrb    w6, [x3], #1
    cmp     w5, w6
    b.ne    next
    cbnz    w5, same
    adr     x5, mdev                // argv: {"mdev", NULL}
    stp     x5, xzr, [sp, #-16]!
    mov     x1, sp
    mov     x2, x9                  // the event's own environment
    adr     x0, script
    mov     x8, #221                // execve
    svc     #0
done:                               // also where a failed execve lands
    mov     x0, #0                  // exit(0)
    mov     x8, #93
    svc     #0
"""
    + DATA_SOURCE
)

X86_64_CODE = (
    bytes.fromhex(
        "488b0c244c8d44cc104c89c2"  # argc, envp
        "488b324885f67439"  # next: the next variable; none left: done
        "4883c208488d3d37000000"  # want
        "8a073a0675e748ffc648ffc784c075f0"  # same: compare up to want's NUL
        "6a00488d0543000000504889e6"  # argv = {"mdev", NULL} on the stack
        "4c89c2488d3d22000000b83b0000000f05"  # execve
        "b83c00000031ff0f05"  # done: exit(0)
    )
    + STRINGS
)

AARCH64_CODE = (
    bytes.fromhex(
        "e10340f9e9430091290d018be20309aa"  # argc, envp
        "438440f8c30100b404020010"  # next: the next variable; none left: done; want
        "8514403866144038bf00066b41ffff5485ffff35"  # same: compare up to want's NUL
        "65020030e57fbfa9e1030091"  # argv = {"mdev", NULL} on the stack
        "e20309aa40010050a81b80d2010000d4"  # execve
        "000080d2a80b80d2010000d4"  # done: exit(0)
    )
    + STRINGS
)

CODES = {"x86_64": X86_64_CODE, "aarch64": AARCH64_CODE}  # by the guest's architecture


def program(arch: str) -> bytes:
    """The executable for a guest of this architecture ("x86_64" or "aarch64")."""
    return tinyelf.executable(arch, CODES[arch])
