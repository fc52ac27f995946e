"""The package's imports run one way: cli -> operations -> records -> store/qemu/guest.

Every import is counted, at module level or inside a function (aq imports lazily to
start fast, and a lazy import is still a dependency), so no cycle can hide in one.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "aq"

# Lower numbers may not import higher ones. A module not listed takes the layer of its
# nearest listed parent package.
LAYERS: dict[str, int] = {
    "aq.__main__": 4,
    "aq.cli": 4,  # parse, call, format
    "aq.power": 3,  # operations: start
    "aq.stopping": 3,  # operations: stop, remove
    "aq.moves": 3,  # an action bracketed between two transitions
    "aq.readiness": 3,  # a booting VM: its channel plugged in, then answering
    "aq.vm": 3,  # operations: create, find, list
    "aq.ssh": 3,
    "aq.images": 3,
    "aq.doctor": 3,  # checks what aq needs from the host
    "aq.suspend": 3,  # operations: suspend, snapshot, resume, clones
    "aq.snapshots": 3,
    "aq.clones": 3,
    "aq.resume": 3,
    "aq.identity": 3,
    "aq.savedstate": 2,
    "aq.statelock": 2,  # records: what a saved state is and needs
    "aq.machine": 2,  # what a VM's QEMU runs with
    "aq.sshkeys": 2,
    "aq.reconcile": 2,  # records: the store made true
    "aq.lifecycle": 2,
    "aq.boottime": 2,
    "aq.bootcopy": 2,  # the VM's own kernel, kept for direct boot
    "aq.alloc": 2,
    "aq.config": 1,  # settings kept in the store
    "aq.store": 1,
    "aq.qemu": 1,
    "aq.guest": 1,
    "aq.console": 1,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, name: str) -> set[str]:
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        graph[name] = {
            target
            for target in _imports(path, name)
            if target in modules and target != name and target != "aq"
        }
    return graph


def _layer(module: str) -> int | None:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        layer = LAYERS.get(".".join(parts[:end]))
        if layer is not None:
            return layer
    return None  # shared helpers (errors, paths, units, ...): importable by every layer


def test_graph_is_found() -> None:
    graph = _graph()
    assert "aq.cli.main" in graph and "aq.power" in graph["aq.cli.power"]


def test_no_import_cycles() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append([*trail[trail.index(target) :], target])
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_layers_point_down() -> None:
    upward = []
    for module, targets in _graph().items():
        mine = _layer(module)
        for target in targets:
            theirs = _layer(target)
            if theirs is None:
                continue
            if mine is None or theirs > mine:
                upward.append(f"{module} -> {target}")
    assert sorted(upward) == []


def test_every_module_imports_alone() -> None:
    import subprocess
    import sys

    names = sorted(n for n in _graph() if not n.startswith(("aq.migrations", "aq.__main__")))
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\n"
    for name in names:
        done = subprocess.run(
            [sys.executable, "-c", code, name], cwd=REPO, capture_output=True, text=True
        )
        assert done.returncode == 0, f"import {name}: {done.stderr.strip().splitlines()[-1:]}"
