"""Settings (aq config) and the cache of the latest Alpine release per architecture.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "settings",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "releases",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("arch", sa.String(16), nullable=False),
        sa.Column("flavor", sa.String(32), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("branch", sa.String(16), nullable=False),
        sa.Column("file", sa.Text, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer),
        sa.Column("released", sa.String(32)),
        sa.Column("mirror", sa.Text, nullable=False),
        sa.Column("fetched_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("arch", "flavor", name="release_arch_flavor"),
    )


def downgrade() -> None:
    op.drop_table("releases")
    op.drop_table("settings")
