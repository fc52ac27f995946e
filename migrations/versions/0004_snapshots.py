"""Snapshots and saved states: a tag on snapshot images, and saved memory records.

A saved state is the QEMU migration stream of a paused VM, written to a file, with
what it needs to be valid (QEMU version, machine type, accelerator, architecture, the
exact argv of the boot, the disk it belongs to). A VM holds one (suspend, or a clone
of a live snapshot) or a snapshot image does (a live snapshot's memory).

Revision ID: 0004_snapshots
Revises: 0003
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_snapshots"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("tag", sa.String(63)))
    op.create_index(
        "images_snapshot_tag",
        "images",
        ["tag"],
        unique=True,
        sqlite_where=sa.text("tag IS NOT NULL"),
    )
    op.create_table(
        "saved_states",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("vm_id", sa.Integer, sa.ForeignKey("vms.id", ondelete="CASCADE"), unique=True),
        sa.Column(
            "image_id", sa.Integer, sa.ForeignKey("images.id", ondelete="CASCADE"), unique=True
        ),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("owned", sa.Boolean, nullable=False),
        sa.Column("source_vm_id", sa.Integer),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("qemu_version", sa.String(128), nullable=False),
        sa.Column("machine", sa.String(64), nullable=False),
        sa.Column("accel", sa.String(8), nullable=False),
        sa.Column("arch", sa.String(16), nullable=False),
        sa.Column("memory_mib", sa.Integer, nullable=False),
        sa.Column("argv", sa.Text, nullable=False),
        sa.Column("disk", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.CheckConstraint("(vm_id IS NULL) != (image_id IS NULL)", name="saved_state_owner"),
    )


def downgrade() -> None:
    op.drop_table("saved_states")
    op.drop_index("images_snapshot_tag", "images")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("tag")
