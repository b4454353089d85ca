"""Read-only share links to one report (QR codes): revocable, expiring.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "report_shares" in set(sa.inspect(op.get_bind()).get_table_names()):
        return
    op.create_table(
        "report_shares",
        sa.Column("share_id", sa.String(32), primary_key=True),
        sa.Column("report_id", sa.String(36), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at_s", sa.Float(), nullable=False),
        sa.Column("expires_at_s", sa.Float(), nullable=False),
        sa.Column("revoked_at_s", sa.Float(), nullable=True),
        sa.Column("revoked_by", sa.String(128), nullable=True),
    )
    op.create_index("ix_report_shares_report_id", "report_shares", ["report_id"])


def downgrade() -> None:
    op.drop_table("report_shares")
