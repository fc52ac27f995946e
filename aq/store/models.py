"""The tables of aq's database; a documented interface that scripts may query.

Times are UTC, stored by SQLite as text ("2026-11-28 11:50:18.123456"). The README
documents the columns meant for queries. Uniqueness lives here, not only in Python:
a name among VMs that are not removed, a MAC address, and a host address, port and
protocol among forwards (forwards are deleted when their VM is removed).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    """Now in UTC, naive, with microseconds: how every time is stored."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Image(Base):
    """A file aq keeps: a downloaded ISO, an installed base disk, or a snapshot.

    `parent_id` is the qcow2 backing file, so a backing chain is a walk up the parents.
    A base records the ISO it was installed from in `source_id` and `iso_sha256`.
    """

    __tablename__ = "images"
    __table_args__ = (
        CheckConstraint("kind IN ('iso', 'base', 'snapshot')", name="image_kind"),
        Index("images_snapshot_tag", "tag", unique=True, sqlite_where=text("tag IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(Text, unique=True)
    format: Mapped[str] = mapped_column(String(16))
    version: Mapped[str] = mapped_column(String(32))
    arch: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer, default=0)
    disk_size: Mapped[int | None] = mapped_column(Integer)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("images.id", ondelete="RESTRICT"))
    source_id: Mapped[int | None] = mapped_column(ForeignKey("images.id", ondelete="SET NULL"))
    iso_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    tag: Mapped[str | None] = mapped_column(String(63))  # snapshots: the user's name for it

    parent: Mapped[Image | None] = relationship(remote_side=[id], foreign_keys=[parent_id])


class Vm(Base):
    """One virtual machine and its persisted state (see aq.lifecycle for the moves)."""

    __tablename__ = "vms"
    __table_args__ = (
        CheckConstraint(
            "state IN ('created', 'booting', 'running', 'stopping', 'stopped', 'removed')",
            name="vm_state",
        ),
        Index(
            "vms_live_name",
            "name",
            unique=True,
            sqlite_where=text("state != 'removed'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63))
    state: Mapped[str] = mapped_column(String(16))
    arch: Mapped[str] = mapped_column(String(16))
    cpus: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    disk_path: Mapped[str] = mapped_column(Text)
    disk_size: Mapped[int] = mapped_column(Integer)
    mac: Mapped[str] = mapped_column(String(17), unique=True)
    base_image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    pid: Mapped[int | None] = mapped_column(Integer)
    pid_started: Mapped[float | None] = mapped_column(Float)
    owner_pid: Mapped[int | None] = mapped_column(Integer)
    owner_started: Mapped[float | None] = mapped_column(Float)
    accel: Mapped[str | None] = mapped_column(String(8))
    ssh_host_key: Mapped[str | None] = mapped_column(Text)

    base_image: Mapped[Image | None] = relationship()
    forwards: Mapped[list[PortForward]] = relationship(
        back_populates="vm", cascade="all, delete-orphan", order_by="PortForward.id"
    )


class PortForward(Base):
    """A host port that QEMU's user networking forwards to a guest port."""

    __tablename__ = "port_forwards"
    __table_args__ = (
        UniqueConstraint("host_addr", "host_port", "protocol", name="forward_host_unique"),
        CheckConstraint("protocol IN ('tcp', 'udp')", name="forward_protocol"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    vm_id: Mapped[int] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"))
    protocol: Mapped[str] = mapped_column(String(3))
    host_addr: Mapped[str] = mapped_column(String(64))
    host_port: Mapped[int] = mapped_column(Integer)
    guest_port: Mapped[int] = mapped_column(Integer)
    # True when aq picked the host port, so it may pick another if that one is taken.
    auto: Mapped[bool] = mapped_column(default=False)
    purpose: Mapped[str | None] = mapped_column(String(16))

    vm: Mapped[Vm] = relationship(back_populates="forwards")


class Event(Base):
    """Append-only history: every transition of every VM (triggers forbid edits)."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(primary_key=True)
    vm_id: Mapped[int] = mapped_column(ForeignKey("vms.id"), index=True)
    event: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    pid: Mapped[int] = mapped_column(Integer)
    detail: Mapped[str | None] = mapped_column(Text)

    vm: Mapped[Vm] = relationship()


class Setting(Base):
    """User settings (`aq config`), such as the Alpine mirror."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Release(Base):
    """The latest Alpine release a mirror announced, cached per architecture."""

    __tablename__ = "releases"
    __table_args__ = (UniqueConstraint("arch", "flavor", name="release_arch_flavor"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    arch: Mapped[str] = mapped_column(String(16))
    flavor: Mapped[str] = mapped_column(String(32))
    version: Mapped[str] = mapped_column(String(32))
    branch: Mapped[str] = mapped_column(String(16))
    file: Mapped[str] = mapped_column(Text)
    url: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int | None] = mapped_column(Integer)
    released: Mapped[str | None] = mapped_column(String(32))
    mirror: Mapped[str] = mapped_column(Text)
    fetched_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class SavedState(Base):
    """A paused VM's memory and device state (a QEMU migration stream in a file).

    Held by a stopped VM (`aq suspend`, or a clone of a live snapshot) or by a snapshot
    image (a live snapshot's memory). Usable only while every recorded fact still holds
    (aq.savedstate.problem): otherwise aq boots cold and says why. `argv` is the boot's
    own QEMU command line (JSON, VM-specific parts as placeholders), so resuming never
    depends on how aq builds command lines today. `disk` names the disk state the
    memory belongs to. `owned`: the file is this row's to delete (a clone's is not).
    """

    __tablename__ = "saved_states"
    __table_args__ = (
        CheckConstraint("(vm_id IS NULL) != (image_id IS NULL)", name="saved_state_owner"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    vm_id: Mapped[int | None] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"), unique=True)
    image_id: Mapped[int | None] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), unique=True
    )
    path: Mapped[str] = mapped_column(Text)
    owned: Mapped[bool] = mapped_column(default=True)
    source_vm_id: Mapped[int | None] = mapped_column(Integer)  # whose memory it is
    size: Mapped[int] = mapped_column(Integer)
    qemu_version: Mapped[str] = mapped_column(String(128))
    machine: Mapped[str] = mapped_column(String(64))
    accel: Mapped[str] = mapped_column(String(8))
    arch: Mapped[str] = mapped_column(String(16))
    memory_mib: Mapped[int] = mapped_column(Integer)
    argv: Mapped[str] = mapped_column(Text)
    disk: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
