"""Adding virtio-serial ports to a running VM over QMP.

Every port a VM has at boot is one more device event for the guest's initramfs and
early userland to handle, each one a spawned helper (mdev), and under TCG a boot with
aq's 24 command-channel ports took twice as long as one without (bench/BOOT-STALLS.md).
So a VM boots with the ports it needs to become ready, and the rest are plugged in once
it is: QEMU's virtio-serial bus takes ports at run time, the guest sees each appear.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aq.paths import short_socket_path
from aq.qemu.cmdline import SERIAL_BUS, SerialPort
from aq.qemu.monitor import Monitor


def add_serial_ports(qmp: Path, ports: Sequence[tuple[SerialPort, Path]]) -> None:
    """Plug `ports` (each a unix socket server QEMU listens on) into the VM's bus."""
    with Monitor(qmp, connect_timeout=5) as monitor:
        for port, path in ports:
            monitor.command(
                "chardev-add",
                id=port.ident,
                backend={
                    "type": "socket",
                    "data": {
                        "addr": {"type": "unix", "data": {"path": short_socket_path(path)}},
                        "server": True,
                        "wait": False,
                    },
                },
            )
            monitor.command(
                "device_add",
                driver="virtserialport",
                bus=f"{SERIAL_BUS}.0",
                chardev=port.ident,
                name=port.name,
                id=f"dev-{port.ident}",
            )
