"""Shared fixtures: a private AQ_HOME per test, a stand-in base disk, running aq."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from aq import host, paths
from aq.images import catalog
from aq.qemu import img
from aq.store.db import writing
from aq.store.models import Image

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def aq_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty aq home for this test."""
    home = tmp_path / "aq-home"
    monkeypatch.setenv("AQ_HOME", str(home))
    # Nothing reaches a real mirror unless a test serves one (connection refused at once).
    monkeypatch.setenv("AQ_MIRROR", "http://127.0.0.1:9/alpine")
    return home


def register_blank_base(size: int = 1 << 30, version: str = "3.23.6") -> Image:
    """A blank qcow2 recorded as the installed base: enough for store-level tests."""
    folder = paths.make_private_dir(paths.images_dir())
    path = folder / f"base-{version}-{host.guest_arch()}.qcow2"
    img.create_blank(path, size)
    with writing() as session:
        return catalog.register(
            session,
            kind="base",
            path=path,
            fmt="qcow2",
            version=version,
            arch=host.guest_arch(),
            size=path.stat().st_size,
            disk_size=size,
        )


@pytest.fixture
def base_image(aq_home: Path) -> Image:
    return register_blank_base()


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def aq(aq_home: Path):
    """Run aq in-process, like a user would from a shell: aq("new", "x")."""
    from aq.cli.main import cli

    def run(*args: str, input: str | None = None) -> Result:
        runner = CliRunner()
        result = runner.invoke(cli, list(args), input=input, catch_exceptions=False)
        return Result(result.exit_code, result.stdout, result.stderr)

    return run


def aq_process(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    """Start aq as a real subprocess (for races between processes)."""
    return subprocess.Popen(
        [sys.executable, "-m", "aq", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=REPO,
        **kwargs,
    )


# ---------------------------------------------------------------------------------------
# End-to-end fixtures: real QEMU, real Alpine (see tests/e2e.py).

VM_CPUS = "1"  # several vCPUs under TCG have ended in guest kernel panics on these hosts


@pytest.fixture(scope="session")
def mirror():
    """The Alpine mirror the end-to-end tests install from, for the whole run."""
    from tests.e2e import Mirror

    real = os.environ.get("AQ_TEST_MIRROR")
    if real:
        yield Mirror(real.rstrip("/"), None)
        return
    from tests.mirror import build_mirror, start_server

    tree = build_mirror()
    server, url = start_server(tree.root)
    try:
        yield Mirror(url, str(tree.public_key), server, tree)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def installed(tmp_path_factory, mirror):
    """An aq home made by two concurrent first `aq new` runs: one base install."""
    from tests.e2e import Home, stop_all_qemu, vm_env

    path = tmp_path_factory.mktemp("aq-installed")
    home = Home(path, vm_env(path, mirror))
    before = mirror.server.count(".iso") if mirror.server else None
    procs = [
        home.popen(
            "new",
            name,
            "--cpus",
            VM_CPUS,
            "--json",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("first-a", "first-b")
    ]
    home.notes["first"] = [(p.wait(timeout=1500), *p.communicate()) for p in procs]
    if mirror.server:
        home.notes["iso_downloads"] = mirror.server.count(".iso") - before
    try:
        yield home
    finally:
        stop_all_qemu(path)


@pytest.fixture(scope="session")
def shared_vm(installed):
    """One running VM shared by the guest-access tests (stopped at the end)."""
    from tests.e2e import stop_all_qemu

    name = "shared"
    port = _free_port()
    installed.aq("new", name, "--cpus", VM_CPUS, "-p", f"{port}:8080")
    installed.notes["shared_http_port"] = port
    try:
        installed.aq("start", name, "--timeout", "600")
        yield name
    finally:
        installed.aq("stop", name, "--force", check=False)
        stop_all_qemu(installed.path)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
