"""The first schema: VMs, port forwards, images and the append-only event history.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATES = "'created', 'booting', 'running', 'stopping', 'stopped', 'removed'"


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("path", sa.Text, nullable=False, unique=True),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("arch", sa.String(16), nullable=False),
        sa.Column("sha256", sa.String(64)),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("disk_size", sa.Integer),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("images.id", ondelete="RESTRICT")),
        sa.Column("source_id", sa.Integer, sa.ForeignKey("images.id", ondelete="SET NULL")),
        sa.Column("iso_sha256", sa.String(64)),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.CheckConstraint("kind IN ('iso', 'base', 'snapshot')", name="image_kind"),
    )
    op.create_table(
        "vms",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("arch", sa.String(16), nullable=False),
        sa.Column("cpus", sa.Integer, nullable=False),
        sa.Column("memory_mib", sa.Integer, nullable=False),
        sa.Column("disk_path", sa.Text, nullable=False),
        sa.Column("disk_size", sa.Integer, nullable=False),
        sa.Column("mac", sa.String(17), nullable=False, unique=True),
        sa.Column("base_image_id", sa.Integer, sa.ForeignKey("images.id")),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("pid", sa.Integer),
        sa.Column("pid_started", sa.Float),
        sa.Column("owner_pid", sa.Integer),
        sa.Column("owner_started", sa.Float),
        sa.CheckConstraint(f"state IN ({STATES})", name="vm_state"),
    )
    op.create_index(
        "vms_live_name", "vms", ["name"], unique=True, sqlite_where=sa.text("state != 'removed'")
    )
    op.create_table(
        "port_forwards",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("vm_id", sa.Integer, sa.ForeignKey("vms.id", ondelete="CASCADE"), nullable=False),
        sa.Column("protocol", sa.String(3), nullable=False),
        sa.Column("host_addr", sa.String(64), nullable=False),
        sa.Column("host_port", sa.Integer, nullable=False),
        sa.Column("guest_port", sa.Integer, nullable=False),
        sa.Column("auto", sa.Boolean, nullable=False),
        sa.Column("purpose", sa.String(16)),
        sa.UniqueConstraint("host_addr", "host_port", "protocol", name="forward_host_unique"),
        sa.CheckConstraint("protocol IN ('tcp', 'udp')", name="forward_protocol"),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("vm_id", sa.Integer, sa.ForeignKey("vms.id"), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("from_state", sa.String(16)),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("detail", sa.Text),
    )
    op.create_index("ix_events_vm_id", "events", ["vm_id"])
    # History is append-only: the database itself refuses edits and deletions.
    op.execute(
        "CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events "
        "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END"
    )
    op.execute(
        "CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events "
        "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER events_append_only_delete")
    op.execute("DROP TRIGGER events_append_only_update")
    op.drop_table("events")
    op.drop_table("port_forwards")
    op.drop_index("vms_live_name", "vms")
    op.drop_table("vms")
    op.drop_table("images")
