"""Formula/aq.rb stays true: valid Ruby, generated from the lock, the lock what is
installed, and an install from its resource files alone passes its own test block.

The install test downloads the resources' sdists once (cached under
~/.cache/aq-tests/sdists, each checked against the formula's sha256) and installs them
with `pip install --no-deps --no-index` into a fresh virtual environment. Two things come
from elsewhere, both cached beside them, and the test says so rather than hiding it:

- build backends (setuptools, flit-core, hatchling, maturin...): Homebrew's pip fetches
  them into isolated build environments too; here they are wheels in a local folder
  handed to pip with --find-links, so the install itself downloads nothing.
- three resources whose sdists cannot be built on these machines (NOT_BUILT_HERE): their
  sdists are still downloaded and checked against the formula's sha256, and the install
  uses PyPI's wheel of the same version. Homebrew builds the sdists.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import REPO

CACHE = Path.home() / ".cache" / "aq-tests"
SDISTS = CACHE / "sdists"
BUILD_WHEELS = CACHE / "build-wheels"
NOT_BUILT_HERE = {
    # Rust: cargo fetches Sequoia's crates from crates.io, which these machines cannot
    # reach (and a cold Sequoia build takes longer than this test may). Homebrew: `rust`.
    "pysequoia": "crates.io unreachable",
    # Their build runs a hatch plugin, python-sbom[hatch], that this PyPI does not have.
    "filelock": "build plugin python-sbom missing",
    "platformdirs": "build plugin python-sbom missing",
}
FORMULA = REPO / "Formula" / "aq.rb"


def _script():
    if "formula_script" in sys.modules:
        return sys.modules["formula_script"]
    spec = importlib.util.spec_from_file_location("formula_script", REPO / "scripts/formula.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["formula_script"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def resources(text: str) -> dict[str, tuple[str, str]]:
    """{name: (url, sha256)} of the formula's resource blocks, read from the Ruby."""
    found = re.findall(r'resource "([^"]+)" do\n\s+url "([^"]+)"\n\s+sha256 "([0-9a-f]{64})"', text)
    return {name: (url, sha) for name, url, sha in found}


def _version_in(url: str) -> str:
    return url.rsplit("/", 1)[1].removesuffix(".tar.gz").rsplit("-", 1)[1]


def test_formula_is_valid_ruby() -> None:
    assert shutil.which("ruby"), "ruby is needed for this check (.ci/setup installs it)"
    done = subprocess.run(["ruby", "-c", str(FORMULA)], capture_output=True, text=True)
    assert done.returncode == 0 and "Syntax OK" in done.stdout, done.stderr


def test_formula_is_what_the_generator_writes() -> None:
    script = _script()
    assert script.render(script.read_lock()) == FORMULA.read_text(), (
        "Formula/aq.rb drifted: run python scripts/formula.py"
    )


def test_formula_lock_and_installed_agree() -> None:
    script = _script()
    installed = script.resolve_installed()
    locked = {p.name: p.version for p in script.read_lock()}
    in_formula = {n: _version_in(url) for n, (url, _) in resources(FORMULA.read_text()).items()}
    assert locked == installed, "pylock.toml is stale: run python scripts/formula.py lock"
    assert in_formula == locked
    assert {"sqlalchemy", "click", "pysequoia", "qemu-qmp"} <= set(locked)


def test_a_changed_resource_is_caught() -> None:
    script = _script()
    pins = script.read_lock()
    bumped = [pins[0].__class__(pins[0].name, "0.0.1", pins[0].url, pins[0].sha256), *pins[1:]]
    assert script.render(bumped) == FORMULA.read_text()  # the version is in the URL...
    moved = [pins[0].__class__(pins[0].name, "x", pins[0].url + "x", "0" * 64), *pins[1:]]
    assert script.render(moved) != FORMULA.read_text()  # ...so a new pin changes the file


def _fetch(url: str, sha256: str, folder: Path) -> Path:
    target = folder / url.rsplit("/", 1)[1]
    if not target.exists() or hashlib.sha256(target.read_bytes()).hexdigest() != sha256:
        with urllib.request.urlopen(url, timeout=120) as answer:
            data = answer.read()
        assert hashlib.sha256(data).hexdigest() == sha256, f"{url}: sha256 differs from the formula"
        part = target.with_suffix(".part")
        part.write_bytes(data)
        part.replace(target)
    return target


def _build_requires(sdist: Path) -> list[str]:
    with tarfile.open(sdist) as tar:
        member = next(
            (
                m
                for m in tar.getmembers()
                if m.name.count("/") == 1 and m.name.endswith("/pyproject.toml")
            ),
            None,
        )
        if member is None:
            return ["setuptools", "wheel"]
        data = tomllib.loads(tar.extractfile(member).read().decode())
    return data.get("build-system", {}).get("requires", ["setuptools", "wheel"])


def _pip(*args: str, python: str = sys.executable, timeout: float = 600) -> None:
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}  # this machine's pip.conf adds indexes
    for key in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT"):
        env.pop(key, None)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


def _build_wheels(requires: set[str]) -> None:
    """Wheels of every build backend the sdists name, once, for --find-links."""
    stamp = BUILD_WHEELS / "requires.json"
    wanted = sorted(requires)
    if stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return
    BUILD_WHEELS.mkdir(parents=True, exist_ok=True)
    _pip(
        "download",
        "--only-binary",
        ":all:",
        "-d",
        str(BUILD_WHEELS),
        "-q",
        "--index-url",
        "https://pypi.org/simple",
        *wanted,
    )
    stamp.write_text(json.dumps(wanted))


def _wheel(name: str, version: str) -> str:
    """PyPI's wheel of `name` at `version`, for a resource not built here (cached)."""
    folder = CACHE / "wheels-not-built-here"
    stem = name.replace("-", "_")
    found = list(folder.glob(f"{stem}-{version}-*.whl"))
    if not found:
        _pip(
            "download",
            "--only-binary",
            ":all:",
            "--no-deps",
            "-d",
            str(folder),
            "-q",
            "--index-url",
            "https://pypi.org/simple",
            f"{name}=={version}",
        )
        found = list(folder.glob(f"{stem}-{version}-*.whl"))
    assert len(found) == 1, found
    return str(found[0])


def _venv(path: Path) -> str:
    """A venv without pip of its own (ensurepip costs seconds): `pip --python` fills it."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120
    )
    return str(path / "bin" / "python")


def _source_tree(dest: Path) -> Path:
    """aq's tracked files as they are in this working tree (what a tag checkout holds)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
    for name in listed.stdout.decode().split("\0"):
        if name and (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def _test_block(text: str) -> str:
    found = re.search(r"\n  test do\n(.*?)\n  end\n", text, re.S)
    assert found, "the formula has a test block"
    return found.group(1)


def run_test_block(text: str, bin_dir: Path, version: str, env: dict) -> list[str]:
    """The formula's test block, run line by line: each shell_output with its expected
    exit status, and each assertion Ruby would make on its output. Returns what ran."""
    ran = []
    outputs: dict[str, str] = {}
    env = dict(env)
    for line in _test_block(text).splitlines():
        setting = re.search(r'ENV\["(\w+)"\] = "([^"#]*)"', line)
        if setting:  # a literal setting (ENV lines with testpath are the caller's)
            env[setting.group(1)] = setting.group(2)
        call = re.search(r'shell_output\("((?:[^"\\]|\\.)*)"(?:, (\d+|nil))?\)', line)
        if not call:
            continue
        command = call.group(1).replace("#{bin}", str(bin_dir)).replace("#{version}", version)
        done = subprocess.run(
            ["sh", "-c", command], env=env, capture_output=True, text=True, timeout=120
        )
        expected = call.group(2) or "0"
        if expected != "nil":
            assert done.returncode == int(expected), f"{command}: {done.returncode}\n{done.stderr}"
        out = done.stdout
        match = re.search(r'assert_match "([^"]+)"', line)
        if match:
            assert match.group(1).replace("#{version}", version) in out, (command, out)
        equal = re.search(r'assert_equal "([^"]*)", shell_output\(.*\)\.strip', line)
        if equal:
            assert out.strip() == equal.group(1), (command, out)
        if "JSON.parse" in line:
            outputs["json"] = out
        ran.append(command)
    report = json.loads(outputs["json"])
    names = re.search(r"assert_equal %w\[([^\]]+)\], checks.keys", text)
    assert names and [c["name"] for c in report["checks"]] == names.group(1).split()
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    for expected, name in re.findall(r'assert_equal "(\w+)", checks\["(\w+)"\]', text):
        assert statuses[name] == expected, (name, statuses)
    return ran


def test_install_from_the_formula_resources_alone(tmp_path: Path) -> None:
    text = FORMULA.read_text()
    wanted = resources(text)
    SDISTS.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(8) as pool:
        files = dict(
            zip(wanted, pool.map(lambda r: _fetch(*r, SDISTS), wanted.values()), strict=True)
        )
    requires = {
        req for name, f in files.items() if name not in NOT_BUILT_HERE for req in _build_requires(f)
    }
    _build_wheels(requires | {"setuptools>=68", "wheel"})
    wheels = [_wheel(name, _version_in(wanted[name][0])) for name in NOT_BUILT_HERE]

    # Build every sdist (and aq) in a builder venv that holds only the build backends;
    # install the results into a fresh venv with --no-deps: what the resources hold is
    # all it gets, and `pip check` proves nothing it needs is missing.
    builder = _venv(tmp_path / "builder")
    _pip(
        "install",
        "--no-index",
        "--find-links",
        str(BUILD_WHEELS),
        "-q",
        *sorted(requires | {"setuptools>=68", "wheel"}),
        python=builder,
    )
    built = tmp_path / "wheels"
    sources = [str(f) for name, f in files.items() if name not in NOT_BUILT_HERE]
    source = _source_tree(tmp_path / "src")
    _pip(
        "wheel",
        "--no-deps",
        "--no-index",
        "--no-build-isolation",
        "-q",
        "-w",
        str(built),
        *sources,
        str(source),
        python=builder,
    )
    venv = tmp_path / "venv"
    python = _venv(venv)
    _pip(
        "install",
        "--no-deps",
        "--no-index",
        "-q",
        *map(str, built.glob("*.whl")),
        *wheels,
        python=python,
    )
    _pip("check", python=python)

    env = {
        "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "AQ_HOME": str(tmp_path / "aq"),
        "AQ_ACCEL": "tcg",  # this host's KVM probe alone takes 15 s (see aq.qemu.accel)
    }
    version = _script()._version()
    ran = run_test_block(text, venv / "bin", version, env)
    assert len(ran) >= 4
    code = "import importlib.metadata as m, json\n"
    code += "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    listed = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    got = {_script().normalize(n): v for n, v in json.loads(listed.stdout).items()}
    expected = {name: _version_in(url) for name, (url, _) in wanted.items()}
    assert got == {**expected, "aq": version}, "the venv holds the resources and aq, nothing else"


@pytest.mark.parametrize("line", ['assert_equal "[]", shell_output("#{bin}/aq ls --json").strip'])
def test_the_test_block_runner_checks_outputs(line: str, tmp_path: Path) -> None:
    fake = f"  test do\n    {line.replace('ls --json', 'echo nope')}\n  end\n"
    (tmp_path / "aq").write_text('#!/bin/sh\necho "$@"\n')
    (tmp_path / "aq").chmod(0o755)
    with pytest.raises(AssertionError):
        run_test_block("\n" + fake, tmp_path, "0", dict(os.environ))
