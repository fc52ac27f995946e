"""VM runtime facts: the accelerator of the last start and the guest's SSH host key.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("vms") as batch:
        batch.add_column(sa.Column("accel", sa.String(8)))
        batch.add_column(sa.Column("ssh_host_key", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("vms") as batch:
        batch.drop_column("ssh_host_key")
        batch.drop_column("accel")
