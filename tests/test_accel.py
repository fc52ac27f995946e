"""Choosing an accelerator that can really run a guest: the probe, its memory, the choice.

The probe runs against fake QEMU scripts that abort, hang or succeed, and once against
the real QEMU under TCG (a fraction of a second)."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from aq.errors import AqError
from aq.qemu import accel
from aq.qemu.hostinfo import choose_accel

ABORT = (
    "echo 'qemu-system-x86_64: ../target/i386/kvm/kvm.c:2987: kvm_buf_set_msrs: "
    "Assertion failed.' >&2; kill -ABRT $$"
)
SCRIPTS = {
    "ok": f"exit {accel.PROBE_OK}",
    "abort": ABORT,
    "hang": "exec sleep 30",
    "refuse": "echo 'qemu-system-x86_64: failed to initialize kvm: Permission denied' >&2; exit 1",
}


def fake_qemu(tmp_path: Path, behaviour: str) -> str:
    script = tmp_path / f"qemu-{behaviour}"
    script.write_text(f"#!/bin/sh\n{SCRIPTS[behaviour]}\n")
    script.chmod(0o755)
    return str(script)


@pytest.mark.parametrize(
    ("behaviour", "works", "reason"),
    [
        ("ok", True, ""),
        (
            "abort",
            False,
            "QEMU said: qemu-system-x86_64: ../target/i386/kvm/kvm.c:2987: kvm_buf_set_msrs",
        ),
        ("hang", False, "a test guest made no progress in 1 s"),
        (
            "refuse",
            False,
            "QEMU said: qemu-system-x86_64: failed to initialize kvm: Permission denied",
        ),
    ],
)
def test_probe_verdicts(tmp_path, behaviour, works, reason) -> None:
    verdict = accel.probe(fake_qemu(tmp_path, behaviour), "kvm", timeout=1)
    assert verdict.works is works
    assert verdict.reason.startswith(reason)
    assert verdict.fresh


def test_probe_of_a_missing_binary(tmp_path) -> None:
    verdict = accel.probe(str(tmp_path / "no-qemu"), "kvm", timeout=1)
    assert not verdict.works and "QEMU did not run" in verdict.reason


def test_probe_argv_uses_the_accelerator_and_the_image(tmp_path) -> None:
    argv = accel.probe_argv("qemu", "kvm", tmp_path / "p.bin")
    assert argv[0] == "qemu"
    pairs = set(itertools.pairwise(argv))
    assert ("-accel", "kvm") in pairs and ("-cpu", "host") in pairs
    assert ("-kernel", str(tmp_path / "p.bin")) in pairs
    assert ("-cpu", "max") in set(itertools.pairwise(accel.probe_argv("q", "tcg", Path("i"))))


def test_verdict_is_remembered_per_binary(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AQ_HOME", str(tmp_path / "home"))
    calls = []

    def run(binary, name):
        calls.append((binary, name))
        return accel.Verdict(False, "a test guest made no progress in 15 s", fresh=True)

    binary = fake_qemu(tmp_path, "hang")
    first = accel.remembered(binary, "kvm", run)
    again = accel.remembered(binary, "kvm", run)
    assert first.fresh and not first.works
    assert not again.fresh and not again.works and again.reason == first.reason
    assert len(calls) == 1
    accel.remembered(binary, "tcg", run)  # another accelerator is another question
    other = fake_qemu(tmp_path, "ok")  # and another QEMU binary too
    accel.remembered(other, "kvm", run)
    assert len(calls) == 3
    assert (tmp_path / "home" / accel.CACHE_NAME).stat().st_mode & 0o077 == 0


def test_a_corrupt_cache_means_probing_again(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AQ_HOME", str(tmp_path))
    (tmp_path / accel.CACHE_NAME).write_text("{not json")
    verdict = accel.remembered("qemu", "kvm", lambda b, a: accel.Verdict(True, fresh=True))
    assert verdict.works and verdict.fresh


def _verdict(works: bool, fresh: bool = True):
    return lambda _name: accel.Verdict(works, "a test guest made no progress in 15 s", fresh)


@pytest.mark.parametrize(
    ("system", "arch", "requested", "kvm", "works", "expected", "note"),
    [
        ("linux", "x86_64", None, True, True, "kvm", False),
        ("linux", "x86_64", None, True, False, "tcg", True),
        ("linux", "x86_64", None, False, False, "tcg", False),  # no /dev/kvm: no probe
        ("linux", "aarch64", None, True, False, "kvm", False),  # x86 probe: not asked
        ("darwin", "aarch64", None, False, False, "hvf", False),  # hvf is trusted
        ("darwin", "x86_64", "hvf", False, False, "hvf", False),
        ("linux", "x86_64", "tcg", True, False, "tcg", False),
        ("linux", "x86_64", "kvm", True, True, "kvm", False),
    ],
)
def test_choice_table(system, arch, requested, kvm, works, expected, note) -> None:
    choice = choose_accel(system, requested, kvm=kvm, arch=arch, probe=_verdict(works))
    assert choice.accel == expected
    assert (choice.note is not None) is note
    if note:
        assert choice.note.startswith("KVM is present but cannot run a guest here (")
        assert choice.note.endswith("); using TCG")


def test_fallback_is_said_only_when_first_found() -> None:
    choice = choose_accel("linux", None, kvm=True, probe=_verdict(False, fresh=False))
    assert choice.accel == "tcg" and choice.note is None


def test_explicit_kvm_that_cannot_work_is_a_clear_error() -> None:
    with pytest.raises(AqError) as err:
        choose_accel("linux", "kvm", kvm=True, probe=_verdict(False))
    line = err.value.one_line()
    assert "KVM cannot run a guest on this host (a test guest made no progress" in line
    assert "Hint: use --accel tcg" in line
    assert err.value.exit_code == 1


def test_probe_never_asked_without_need() -> None:
    def boom(_name):
        raise AssertionError("probed")

    assert choose_accel("linux", "tcg", kvm=True, probe=boom).accel == "tcg"
    assert choose_accel("linux", None, kvm=False, probe=boom).accel == "tcg"
    assert choose_accel("darwin", None, kvm=False, arch="aarch64", probe=boom).accel == "hvf"


@pytest.mark.skipif(not shutil.which("qemu-system-x86_64"), reason="needs qemu-system-x86_64")
def test_real_probe_under_tcg(tmp_path) -> None:
    """The test guest really reaches long mode and exits with PROBE_OK under TCG."""
    verdict = accel.probe(shutil.which("qemu-system-x86_64"), "tcg", timeout=30)
    assert verdict.works, verdict.reason


@pytest.mark.skipif(not (shutil.which("as") and shutil.which("objcopy")), reason="needs binutils")
def test_probe_image_is_its_source_assembled(tmp_path) -> None:
    (tmp_path / "p.S").write_text(accel.PROBE_SOURCE)
    subprocess.run(["as", "--64", "-o", tmp_path / "p.o", tmp_path / "p.S"], check=True)
    subprocess.run(
        ["objcopy", "-O", "binary", "-j", ".text", tmp_path / "p.o", tmp_path / "p.bin"],
        check=True,
    )
    assert (tmp_path / "p.bin").read_bytes() == accel.PROBE_IMAGE


def test_config_set_accel_is_honoured_and_environment_wins(tmp_path, monkeypatch) -> None:
    """`aq config set accel tcg` reaches the choice; AQ_ACCEL still wins over it."""
    monkeypatch.setenv("AQ_HOME", str(tmp_path))
    monkeypatch.delenv("AQ_ACCEL", raising=False)
    import sys

    aq = [sys.executable, "-m", "aq"]
    repo = Path(__file__).resolve().parent.parent
    run = lambda *a: subprocess.run([*aq, *a], cwd=repo, capture_output=True, text=True)  # noqa: E731
    assert run("config", "set", "accel", "xen").returncode == 2
    assert run("config", "set", "accel", "TCG").returncode == 0
    from aq.qemu import hostinfo

    assert hostinfo.configured_accel() == "tcg"
    monkeypatch.setenv("AQ_ACCEL", "kvm")
    assert hostinfo.configured_accel() == "kvm"
    code = textwrap.dedent(
        """
        from aq.qemu import hostinfo
        print(hostinfo.detect().accel)
        """
    )
    monkeypatch.delenv("AQ_ACCEL")
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True)
    assert out.stdout.strip() == "tcg", out.stderr
