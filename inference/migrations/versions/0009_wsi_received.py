"""Whole-slide jobs: when the slide was received (request start for an upload or a
DICOMweb pull, first instance arrival for C-STORE), the start of its turnaround.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("wsi_jobs")}
    if "received_at_s" not in columns:
        with op.batch_alter_table("wsi_jobs") as batch:
            batch.add_column(sa.Column("received_at_s", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("wsi_jobs") as batch:
        batch.drop_column("received_at_s")
