"""`aq new` with a base present: wall time and new disk, beside `import sqlalchemy.orm`.

Targets: at most 0.5 s, at most 1 MiB of new disk per VM, and at most 1.3 times a bare
`python -c "import sqlalchemy.orm"` measured in the same run (interleaved). The base here is a real
qcow2 of the base's size registered as installed (what `aq new` reads is the same: it
does not boot anything). Run: .venv/bin/python bench/new.py [--instructions]
(--instructions: also both counted by valgrind, a ratio that a loaded host does not move)
Both run from a regular install of this checkout (bench.common.installed_aq).
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import installed_aq, instructions, interleaved, time_command

RUNS = 9
TARGET_RATIO = 1.3  # issue 13: aq new / `python -c 'import sqlalchemy.orm'`


def disk_used(path: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def main() -> int:
    python, script = installed_aq()  # as a user has them (see its docstring)
    with tempfile.TemporaryDirectory() as home:
        os.environ["AQ_HOME"] = home
        os.environ["AQ_MIRROR"] = "http://127.0.0.1:9/offline"  # prove: no network needed
        from aq.images.install import BASE_DISK_SIZE
        from aq.images.releases import ReleaseInfo
        from tests.conftest import register_blank_base

        base = register_blank_base(size=BASE_DISK_SIZE)
        # The cached answer for "latest release" matches the base, as after a real install.
        from aq.store.db import writing
        from aq.store.models import Release

        with writing() as session:
            session.add(
                Release(
                    arch=base.arch,
                    flavor="alpine-virt",
                    version=base.version,
                    branch="v" + ".".join(base.version.split(".")[:2]),
                    file=f"alpine-virt-{base.version}-{base.arch}.iso",  # passes today's checks
                    url="http://127.0.0.1:9/offline/x.iso",
                    sha256="0" * 64,
                    mirror="http://127.0.0.1:9/offline",
                )
            )
        del ReleaseInfo
        env = dict(os.environ)
        counter = iter(range(10_000))
        sizes: list[int] = []

        def one_new_argv(name: str) -> list[str]:
            return [script, "new", name, "--cpus", "1"]

        cpu: dict[str, list[float]] = {"aq": [], "orm": []}

        def timed(argv: list[str], key: str) -> float:
            """Wall time; the CPU time (user + system, children included) goes to cpu."""
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            took = time_command(argv, env)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[key].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            return took

        def one_new() -> float:
            name = f"bench-{next(counter)}"
            took = timed(one_new_argv(name), "aq")
            sizes.append(disk_used(Path(home) / "vms" / name))
            return took

        orm_argv = [python, "-c", "import sqlalchemy.orm"]
        one_new()
        time_command(orm_argv, env)
        sizes.clear()
        cpu["aq"].clear()
        ours, ref = interleaved(RUNS, one_new, lambda: timed(orm_argv, "orm"))
        median, orm = statistics.median(ours), statistics.median(ref)
        worst_disk = max(sizes)
        ratio = median / orm
        ok = median <= 0.5 and worst_disk <= 1 << 20 and ratio <= TARGET_RATIO
        print(
            f"aq new (base present): median {median:.3f}s | import sqlalchemy.orm: median "
            f"{orm:.3f}s | ratio {ratio:.2f} (target <= {TARGET_RATIO}) | max new disk "
            f"{worst_disk / 1024:.0f} KiB (target <= 1024) | "
            f"{'OK' if ok else 'OVER TARGET'}"
        )
        ours_cpu, orm_cpu = statistics.median(cpu["aq"]), statistics.median(cpu["orm"])
        print(
            f"CPU time (user + system): aq new median {ours_cpu:.3f}s | import "
            f"sqlalchemy.orm median {orm_cpu:.3f}s | ratio {ours_cpu / orm_cpu:.2f} "
            "(steadier than wall time on a loaded host)"
        )
        if "--instructions" in sys.argv:
            ours_i = instructions([*one_new_argv(f"bench-i-{next(counter)}")], env)
            ref_i = instructions(orm_argv, env)
            if ours_i and ref_i:
                print(
                    f"instructions (callgrind): aq new {ours_i / 1e6:.0f} M | import "
                    f"sqlalchemy.orm {ref_i / 1e6:.0f} M | ratio {ours_i / ref_i:.2f}"
                )
        subprocess.run([sys.executable, "-m", "aq", "ls"], env=env, stdout=subprocess.DEVNULL)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
