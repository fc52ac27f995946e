"""Everything that talks to QEMU: qemu-img, the command line, the process, QMP."""
