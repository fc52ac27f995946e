"""aq: Alpine Linux virtual machines on QEMU."""

__version__ = "0.1.0"
