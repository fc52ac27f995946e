"""`aq new --arch`: a VM of another architecture than the host's, emulated with TCG."""

from __future__ import annotations

import json
import re

import pytest

from aq import host, paths
from aq.errors import InvalidInput
from aq.images import catalog
from aq.qemu import hostinfo, img
from aq.qemu.hostinfo import emulated_accel
from aq.store.db import writing

OTHER = {"x86_64": "aarch64", "aarch64": "x86_64"}


@pytest.mark.parametrize(
    ("guest", "native", "requested", "expected"),
    [
        ("x86_64", "x86_64", None, None),  # native: the usual choice (hvf, kvm, tcg)
        ("x86_64", "x86_64", "kvm", None),
        ("aarch64", "aarch64", "hvf", None),
        ("aarch64", "x86_64", None, "tcg"),  # the tests' way to the Apple Silicon path
        ("aarch64", "x86_64", "tcg", "tcg"),
        ("aarch64", "x86_64", "TCG", "tcg"),
        ("x86_64", "aarch64", None, "tcg"),  # an Intel guest on Apple Silicon
    ],
)
def test_emulation_table(guest, native, requested, expected) -> None:
    assert emulated_accel(guest, native, requested) == expected


@pytest.mark.parametrize("requested", ["kvm", "hvf"])
def test_an_accelerator_cannot_run_a_foreign_guest(requested) -> None:
    with pytest.raises(InvalidInput) as err:
        emulated_accel("aarch64", "x86_64", requested)
    assert requested in err.value.message and "tcg" in err.value.hint


def test_detect_emulates_a_foreign_arch_even_when_kvm_is_configured(monkeypatch) -> None:
    monkeypatch.setattr(host, "guest_arch", lambda machine=None: "x86_64")
    monkeypatch.setenv("AQ_ACCEL", "kvm")
    monkeypatch.setattr(hostinfo, "qemu_binary", lambda arch: f"/usr/bin/qemu-system-{arch}")
    monkeypatch.setattr(hostinfo, "find_uefi_firmware", lambda binary, arch: paths.Path("/fw"))
    info = hostinfo.detect(arch="aarch64")
    assert (info.arch, info.accel, info.firmware) == ("aarch64", "tcg", paths.Path("/fw"))


def _register_base(arch: str) -> None:
    folder = paths.make_private_dir(paths.images_dir())
    path = folder / f"base-3.23.6-{arch}.qcow2"
    img.create_blank(path, 1 << 30)
    with writing() as session:
        catalog.register(
            session,
            kind="base",
            path=path,
            fmt="qcow2",
            version="3.23.6",
            arch=arch,
            size=path.stat().st_size,
            disk_size=1 << 30,
        )


def test_new_with_another_arch_uses_that_arch_base(aq) -> None:
    native = host.guest_arch()
    foreign = OTHER[native]
    _register_base(native)
    _register_base(foreign)
    made = aq("new", "emu", "--arch", foreign, "--json")
    assert made.exit_code == 0, made.stderr
    assert json.loads(made.stdout)["arch"] == foreign
    assert aq("new", "own", "--json").exit_code == 0
    status = json.loads(aq("status", "own", "--json").stdout)
    assert status["arch"] == native and status["backing_chain"][-1].endswith(f"{native}.qcow2")
    shown = aq("status", "emu").stdout
    assert re.search(rf"^arch +{foreign}$", shown, re.M), shown
    emu = json.loads(aq("status", "emu", "--json").stdout)
    assert emu["backing_chain"][-1].endswith(f"{foreign}.qcow2")


def test_unknown_arch_is_a_usage_error_and_creates_nothing(aq) -> None:
    _register_base(host.guest_arch())
    bad = aq("new", "x", "--arch", "riscv64")
    assert bad.exit_code == 2
    assert json.loads(aq("ls", "--json").stdout) == []
