"""Each command imports only what it needs: the command table loads one module per
lookup, and `aq exec` on a running VM reaches the guest without SQLAlchemy."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO


def _fresh(code: str, env: dict | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _program(args: list[str], env: dict) -> subprocess.CompletedProcess:
    """`python -m aq ARGS`, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "aq", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_table_names_every_module_command_in_order() -> None:
    from aq.cli.main import MODULES, cli

    for module, names in MODULES.items():
        loaded = importlib.import_module(f"aq.cli.{module}").COMMANDS
        assert tuple(c.name for c in loaded) == names
    assert list(cli.commands) == [n for names in MODULES.values() for n in names]


def test_a_lookup_imports_one_module() -> None:
    code = (
        "import sys\nfrom aq.cli.main import cli\n"
        "assert cli.commands.get('new') is not None and 'nope' not in cli.commands\n"
        "print(sorted(m for m in sys.modules if m.startswith('aq.cli.')))"
    )
    assert _fresh(code) == str(
        [
            "aq.cli.complete",
            "aq.cli.main",
            "aq.cli.output",
            "aq.cli.render",
            "aq.cli.report",
            "aq.cli.vms",
        ]
    )


def _running_record(name: str, pid: int, started: float) -> None:
    from aq.store.db import writing
    from aq.store.models import Vm

    with writing() as session:
        vm = session.query(Vm).filter_by(name=name).one()
        vm.state, vm.pid, vm.pid_started = "running", pid, started


def test_exec_on_a_running_vm_skips_the_orm(aq, base_image, aq_home: Path) -> None:
    from aq import paths
    from aq.cli.access import _surely_running
    from aq.qemu import process

    assert aq("new", "fast").exit_code == 0
    assert not _surely_running("fast")  # created, not running
    pidfile = paths.vm_files("fast").pidfile
    # A stand-in QEMU: a live process whose command line names the VM's pid file.
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(pidfile)])
    try:
        ident = None
        for _ in range(50):
            ident = process.identity(stand_in.pid)
            if ident:
                break
            time.sleep(0.05)
        assert ident is not None
        _running_record("fast", ident.pid, ident.started)
        assert _surely_running("fast")
        env = {"AQ_HOME": str(aq_home)}
        code = (
            "import sys\nfrom aq.cli.main import cli\n"
            "try:\n    cli.main(['exec', 'fast', '--', 'true'], prog_name='aq')\n"
            "except SystemExit as done:\n    print(done.code)\n"
            "print('sqlalchemy' in sys.modules)\n"
            "print(*sorted(m for m in ('alembic', 'transitions', 'tenacity', 'qemu.qmp',"
            " 'urllib.request', 'traceback', 'asyncio') if m in sys.modules))"
        )
        # No agent answers the stand-in: aq's own failure (255), and no ORM on the way
        # (and no heavy module: nothing printed on the third line).
        assert _fresh(code, env).splitlines() == ["255", "False"]
        # The program itself: the plain form needs neither click nor the ORM...
        code = (
            "import sys\nfrom aq.cli.entry import fast_exec\n"
            "print(fast_exec(['exec', 'fast', '--', 'true']))\n"
            "print('click' in sys.modules, 'sqlalchemy' in sys.modules)\n"
            "print('also:', *sorted(m for m in ('typing', 'dataclasses', 'inspect', 'threading')"
            " if m in sys.modules))"
        )
        # (typing, dataclasses and threading are a few ms each: aq.paths.VmFiles)
        assert _fresh(code, env).splitlines() == ["255", "False False", "also:"]
        # ...and fails exactly as click's path does (`exec NAME CMD` takes that one).
        fast = _program(["exec", "fast", "--", "true"], env)
        slow = _program(["exec", "fast", "true"], env)
        assert fast.returncode == slow.returncode == 255
        assert fast.stderr == slow.stderr and fast.stderr.startswith("Error: cannot reach")
        assert len(fast.stderr.splitlines()) == 1
    finally:
        stand_in.kill()
        stand_in.wait()
    assert not _surely_running("fast")  # its QEMU is gone: the full store decides
    done = aq("exec", "fast", "--", "true")
    assert done.exit_code == 255 and "crashed" not in done.stdout
    assert aq("status", "fast", "--json").stdout.count('"stopped"') >= 1


# Modules that only some commands need: each costs 10-300 ms to import.
HEAVY = (
    "alembic",
    "transitions",
    "tenacity",
    "qemu.qmp",
    "urllib.request",
    "http.client",
    "yaml",
    "pycdlib",
    "filelock",
    "coolname",
)


def _imported_by(args: list[str], home: Path) -> set[str]:
    """The HEAVY modules a fresh interpreter has loaded after `aq ARGS` ran."""
    code = (
        "import sys\nfrom aq.cli.entry import main\n"
        f"sys.argv = ['aq', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit as done:\n    assert not done.code, done.code\n"
        f"print('loaded:', *(m for m in {HEAVY!r} if m in sys.modules))"
    )
    last = _fresh(code, {"AQ_HOME": str(home)}).splitlines()[-1]
    assert last.startswith("loaded:"), last
    return set(last.split()[1:])


def test_the_store_commands_import_no_more_than_the_store(aq, base_image, aq_home: Path) -> None:
    """`aq new` with its base present, and the listings: no migration tool, no state
    machine library, no retry library, no QMP, no HTTP, no YAML."""
    from aq.store.db import writing
    from aq.store.models import Release

    with writing() as session:  # the cached answer for "latest", as after an install
        session.add(
            Release(
                arch=base_image.arch,
                flavor="alpine-virt",
                version=base_image.version,
                branch="v3.23",
                file=f"alpine-virt-{base_image.version}-{base_image.arch}.iso",
                url="http://127.0.0.1:9/x.iso",
                sha256="0" * 64,
                mirror="http://127.0.0.1:9/alpine",
            )
        )
    assert aq("new", "first").exit_code == 0
    for args in (["new", "second", "--cpus", "1"], ["ls"], ["status", "second"], ["history"]):
        assert _imported_by(args, aq_home) == set(), args
    assert aq("status", "second").exit_code == 0


def test_gc_is_off_while_modules_load_then_back(tmp_path: Path) -> None:
    code = (
        "import gc, threading, time, sys\nfrom aq.cli import entry as m\n"
        "m._collect_later()\nprint(gc.isenabled())\n"
        "timer = [t for t in threading.enumerate() if t is not threading.main_thread()][0]\n"
        "if sys.platform == 'linux':\n"
        "    status = open(f'/proc/self/task/{timer.native_id}/status').read()\n"
        "    blocked = int(status.split('SigBlk:')[1].split()[0], 16)\n"
        "    print(blocked & (1 << 1) != 0)  # SIGINT (2) blocked in the timer thread\n"
        "else:\n    print(True)\n"
        "timer.join(m.GC_PAUSE_S + 10)\nprint(gc.isenabled())"
    )
    assert _fresh(code).split() == ["False", "True", "True"]
