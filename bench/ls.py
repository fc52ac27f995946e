"""`aq ls` with 100 VMs in the store, as a ratio to `python -c "import sqlalchemy.orm"`.

Target: at most 1.5. Run: .venv/bin/python bench/ls.py
Both run from a regular install of this checkout (bench.common.installed_aq).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import installed_aq, interleaved, report, time_command

RUNS = 11
VMS = 100


def main() -> int:
    python, script = installed_aq()
    with tempfile.TemporaryDirectory() as home:
        os.environ["AQ_HOME"] = home
        from aq import vm
        from tests.conftest import register_blank_base

        base = register_blank_base()
        for i in range(VMS):
            vm.create(vm.NewVm(name=f"vm-{i}", forwards=()), base)
        env = {**os.environ}
        aq_ls = [script, "ls"]
        orm = [python, "-c", "import sqlalchemy.orm"]
        time_command(aq_ls, env)  # warm caches (pyc, page cache) for both
        time_command(orm, env)
        ours, ref = interleaved(
            RUNS, lambda: time_command(aq_ls, env), lambda: time_command(orm, env)
        )
        ok = report(f"aq ls ({VMS} VMs)", ours, ref, 1.5, "import sqlalchemy.orm")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
