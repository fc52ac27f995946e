"""`aq doctor` and `aq --version`: each check with fakes, then once for real on this host."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections import namedtuple
from pathlib import Path

import pytest

from aq import doctor
from aq.qemu.accel import Verdict
from tests.conftest import REPO

Usage = namedtuple("Usage", "total used free")


def _which(found: dict[str, str]):
    return lambda name: found.get(name)


def test_qemu_missing_says_how_to_install() -> None:
    check = doctor.check_qemu("x86_64", which=_which({}))
    assert check.status == "fail"
    assert "qemu-system-x86_64" in check.detail and "qemu-img" in check.detail
    assert "install" in check.hint


@pytest.mark.parametrize(
    ("version", "status"), [("10.1.2", "ok"), ("7.2.22", "ok"), ("7.1.0", "warn"), (None, "fail")]
)
def test_qemu_version(version: str | None, status: str) -> None:
    found = {"qemu-system-x86_64": "/q/qemu-system-x86_64", "qemu-img": "/q/qemu-img"}
    check = doctor.check_qemu("x86_64", which=_which(found), version_of=lambda _b: version)
    assert check.status == status
    if version:
        assert version in check.detail


def _verdicts(**works: bool):
    asked: list[str] = []

    def verdict(_binary: str, accel: str) -> Verdict:
        asked.append(accel)
        return Verdict(works[accel], "" if works[accel] else f"{accel} broke")

    return verdict, asked


def test_accel_kvm_that_works() -> None:
    verdict, asked = _verdicts(kvm=True)
    check = doctor.check_accel("/q", "linux", None, True, verdict)
    assert (check.status, check.detail, asked) == ("ok", "KVM works", ["kvm"])


def test_accel_broken_kvm_falls_back_to_tcg() -> None:
    verdict, asked = _verdicts(kvm=False, tcg=True)
    check = doctor.check_accel("/q", "linux", None, True, verdict)
    assert check.status == "warn" and asked == ["kvm", "tcg"]
    assert "TCG works" in check.detail and "kvm broke" in check.detail


def test_accel_without_kvm_and_broken_tcg_fails() -> None:
    verdict, asked = _verdicts(tcg=False)
    check = doctor.check_accel("/q", "linux", None, False, verdict)
    assert check.status == "fail" and asked == ["tcg"]


def test_accel_forced_kvm_that_cannot_run_fails() -> None:
    verdict, _ = _verdicts(kvm=False)
    check = doctor.check_accel("/q", "linux", "kvm", True, verdict)
    assert check.status == "fail" and "unset" in check.hint


def test_accel_on_macos_is_hvf() -> None:
    verdict, asked = _verdicts()
    assert doctor.check_accel("/q", "darwin", None, False, verdict).detail.startswith("hvf")
    assert asked == []


@pytest.mark.parametrize(
    ("free", "status"), [(100 << 30, "ok"), (2 << 30, "warn"), (1 << 20, "fail")]
)
def test_disk(tmp_path: Path, free: int, status: str) -> None:
    check = doctor.check_disk(tmp_path / "not" / "yet", usage=lambda _p: Usage(0, 0, free))
    assert check.status == status


def test_home_cases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AQ_HOME", str(tmp_path / "h"))
    assert doctor.check_home(tmp_path / "h").status == "ok"  # made on first use
    assert not (tmp_path / "h").exists(), "doctor made nothing"
    (tmp_path / "file").write_text("x")
    assert doctor.check_home(tmp_path / "file").status == "fail"
    (tmp_path / "link").symlink_to(tmp_path)
    assert doctor.check_home(tmp_path / "link").status == "fail"
    if os.getuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert doctor.check_home(locked).status == "fail"


def test_mirror_unreachable_fails_only_without_a_base() -> None:
    down = lambda _url: "connection refused"  # noqa: E731
    assert doctor.check_mirror("http://m", "x86_64", False, reach=down).status == "fail"
    assert doctor.check_mirror("http://m", "x86_64", True, reach=down).status == "warn"
    seen: list[str] = []
    check = doctor.check_mirror("http://m", "x86_64", False, reach=lambda u: seen.append(u))
    assert check.status == "ok"
    assert seen == ["http://m/latest-stable/releases/x86_64/latest-releases.yaml"]


def test_mirror_text_is_made_safe() -> None:
    check = doctor.check_mirror("http://m\x1b[2J", "x86_64", False, reach=lambda _u: "bad\x07")
    assert "\x1b" not in check.detail and "\x07" not in check.detail


def test_healthy() -> None:
    ok, warn, fail = (doctor.Check("a", s, "") for s in ("ok", "warn", "fail"))
    assert doctor.healthy([ok, warn]) and not doctor.healthy([ok, fail])


# ---------------------------------------------------------------------------------------
# For real on this host: its QEMU, its /dev/kvm (present, but unable to run a guest), TCG.


class _Index(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_args) -> None:
        pass


@pytest.fixture(scope="module")
def local_mirror(tmp_path_factory):
    root = tmp_path_factory.mktemp("mirror")
    index = root / "latest-stable" / "releases" / "x86_64" / "latest-releases.yaml"
    index.parent.mkdir(parents=True)
    index.write_text("---\n")
    handler = lambda *a, **kw: _Index(*a, directory=str(root), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _run(*args: str, home: Path, mirror: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AQ_HOME": str(home), "AQ_MIRROR": mirror}
    env.pop("AQ_ACCEL", None)
    return subprocess.run(
        [sys.executable, "-m", "aq", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(sys.platform != "linux", reason="this host's facts: Linux, x86_64")
def test_doctor_on_this_host(tmp_path: Path, local_mirror: str) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    done = _run("doctor", "--json", home=home, mirror=local_mirror)
    report = json.loads(done.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert done.returncode == 0 and report["ok"] is True, done.stdout
    assert list(checks) == ["qemu", "accel", "firmware", "home", "disk", "mirror"]
    assert checks["qemu"]["status"] == "ok" and "QEMU 7." in checks["qemu"]["detail"]
    accel = checks["accel"]["detail"]
    if Path("/dev/kvm").exists():  # this host: KVM is offered but cannot run a guest
        assert accel.startswith("TCG works; KVM not usable"), accel
    assert checks["mirror"]["status"] == "ok"
    assert sorted(p.name for p in home.iterdir()) == ["accel-probe.json"], "nothing but the cache"

    # The same host with the mirror down and no base: aq cannot make a VM; exit 1.
    done = _run("doctor", home=home, mirror="http://127.0.0.1:9/alpine")
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert len(lines) == 6 and lines[-1].startswith("fail  mirror"), lines
    assert "Hint: " in lines[-1]
    assert not (home / "aq.db").exists()


def test_version_names_the_qemu(tmp_path: Path) -> None:
    done = _run("--version", home=tmp_path / "none", mirror="http://127.0.0.1:9/x")
    assert done.returncode == 0
    first, second = done.stdout.splitlines()
    assert first == "aq 0.1.0"
    assert second.startswith("qemu: ") and ("qemu-system-" in second)
    assert not (tmp_path / "none").exists()
