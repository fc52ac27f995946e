"""Which kernel, initramfs and command line a guest's bootloader would boot.

aq boots a VM's own kernel directly (-kernel/-initrd/-append) when it holds a current
copy of it, so it must read the guest's bootloader configuration exactly as the
firmware path would: SYSLINUX's extlinux.conf on x86_64 (what Alpine's setup-disk and
update-extlinux write) and GRUB's grub.cfg on aarch64 (what grub-mkconfig writes).
The text comes from the guest, so it is bounded and anything aq cannot follow exactly
(variables, includes, a default it cannot find) is refused with a reason: the firmware
path then boots the VM instead.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

CONFIG_MAX = 64 << 10  # bytes of bootloader configuration aq reads
PATH_MAX = 255

# Where each bootloader keeps its configuration, in the order aq looks (per guest arch).
CONFIGS = {
    "x86_64": ("/boot/extlinux.conf", "/boot/grub/grub.cfg"),
    "aarch64": ("/boot/grub/grub.cfg", "/boot/extlinux.conf"),
}


class Unsupported(Exception):
    """The configuration says something aq cannot follow exactly; the reason is the text."""


@dataclass(frozen=True)
class BootEntry:
    """What the bootloader boots: paths as the bootloader names them, and the cmdline."""

    kernel: str
    initrds: tuple[str, ...]
    append: str


def _split(line: str) -> tuple[str, str]:
    """The first word and the rest (either may be empty); tabs count as spaces."""
    word, *rest = line.split(None, 1)
    return word, rest[0] if rest else ""


def _path(value: str) -> str:
    if not value or len(value) > PATH_MAX or any(ord(c) < 32 for c in value):
        raise Unsupported(f"unusable boot file name {value[:40]!r}")
    return value


def _check_append(append: str) -> str:
    if len(append) > 4096 or any(ord(c) < 32 and c != "\t" for c in append):
        raise Unsupported("the kernel command line is too long or has control characters")
    return append.strip()


def parse_extlinux(text: str) -> BootEntry:
    """The entry SYSLINUX boots: DEFAULT's label, else MENU DEFAULT's, else the first."""
    labels: list[dict[str, str]] = []
    default = None
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, rest = _split(line)
        key, rest = word.upper(), rest.strip()
        if key == "LABEL":
            current = {"label": rest}
            labels.append(current)
        elif key == "DEFAULT":
            default = rest
        elif key in ("INCLUDE", "CONFIG"):
            raise Unsupported(f"extlinux.conf uses {word}, which aq does not follow")
        elif current is None:
            continue
        elif key in ("LINUX", "KERNEL"):
            current["kernel"] = rest
        elif key == "INITRD":
            current["initrd"] = rest
        elif key == "APPEND":
            current["append"] = rest
        elif key == "MENU" and rest.upper() == "DEFAULT":
            current["menu_default"] = "yes"
    if not labels:
        raise Unsupported("extlinux.conf has no LABEL")
    chosen = next((entry for entry in labels if entry["label"] == default), None)
    chosen = chosen or next((e for e in labels if "menu_default" in e), None) or labels[0]
    if "kernel" not in chosen:
        raise Unsupported(f"extlinux.conf label {chosen['label']!r} names no kernel")
    append = chosen.get("append", "")
    initrds = [p for p in chosen.get("initrd", "").split(",") if p]
    for word in append.split():
        if word.startswith("initrd="):
            initrds += [p for p in word[len("initrd=") :].split(",") if p]
    append = " ".join(w for w in append.split() if not w.startswith("initrd="))
    return BootEntry(
        kernel=_path(chosen["kernel"]),
        initrds=tuple(_path(p) for p in initrds),
        append=_check_append(append),
    )


_MENUENTRY = re.compile(r"^\s*menuentry\b")
_SET_DEFAULT = re.compile(r"""^\s*set\s+default=["']?([^"'\s]*)["']?\s*$""")


def parse_grub(text: str) -> BootEntry:
    """The entry GRUB boots: `set default` (an index or a title), else the first."""
    entries: list[tuple[str, list[str]]] = []
    default = "0"
    depth = 0
    body: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if depth == 0 and (match := _SET_DEFAULT.match(line)):
            default = match.group(1)
            continue
        if depth == 0 and _MENUENTRY.match(line):
            title = shlex.split(line[len("menuentry") :].split("{")[0] or "''")[0]
            body = []
            entries.append((title, body))
        if body is not None and depth >= 1:
            body.append(line)
        depth += line.count("{") - line.count("}")
        if depth <= 0:
            depth, body = 0, None
    if not entries:
        raise Unsupported("grub.cfg has no menuentry")
    if default.isdigit():
        index = int(default)
        if index >= len(entries):
            raise Unsupported(f"grub.cfg's default entry {index} does not exist")
        lines = entries[index][1]
    else:
        lines = next((b for title, b in entries if title == default), entries[0][1])
    kernel, append, initrds = None, "", []
    for line in lines:
        word, rest = _split(line)
        if word in ("linux", "linuxefi"):
            kernel, append = _split(rest)
        elif word in ("initrd", "initrdefi"):
            initrds = rest.split()
    if kernel is None:
        raise Unsupported("grub.cfg's default entry loads no kernel")
    if "$" in kernel + append + "".join(initrds):
        raise Unsupported("grub.cfg's default entry uses variables")
    return BootEntry(_path(kernel), tuple(_path(p) for p in initrds), _check_append(append))


def parse(config_path: str, text: str) -> BootEntry:
    """Parse the configuration found at `config_path` in the guest."""
    if len(text) > CONFIG_MAX:
        raise Unsupported("the bootloader configuration is too large")
    if config_path.endswith(".cfg"):
        return parse_grub(text)
    return parse_extlinux(text)


def candidates(config_path: str, path: str) -> list[str]:
    """Where a bootloader path may be in the running guest (/boot may be its own fs)."""
    base = config_path.rsplit("/", 1)[0] if config_path.endswith("extlinux.conf") else "/boot"
    if not path.startswith("/"):
        return [f"{base}/{path}"]
    return [f"/boot{path}", path] if not path.startswith("/boot/") else [path, f"/boot{path}"]
