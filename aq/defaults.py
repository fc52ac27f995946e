"""aq's defaults, in one light module: the operations use them and the CLI shows them.

Nothing heavy is imported here, because every CLI module reads these at import time.
"""

from __future__ import annotations

CPUS = 2
MEMORY_MIB = 1024
BOOT_TIMEOUT = 300  # seconds `aq start` waits for the guest to be ready
STOP_TIMEOUT = 60  # seconds `aq stop` waits for an ACPI power-off before falling back
ACCELS = ("hvf", "kvm", "tcg")
