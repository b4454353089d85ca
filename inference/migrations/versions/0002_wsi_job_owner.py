"""Whole-slide jobs record the replica that runs them and its last heartbeat.

A replica that starts no longer fails every queued or running job: only those whose
heartbeat went stale (their replica stopped or lost the database).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _columns() -> list[sa.Column[object]]:
    return [
        sa.Column("owner", sa.String(128), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
    ]


def upgrade() -> None:
    # A store adopted without a version (store._adopt_unversioned) may have had
    # wsi_jobs created from today's declaration, columns included: add only what lacks.
    present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("wsi_jobs")}
    with op.batch_alter_table("wsi_jobs") as batch:  # SQLite: copy-and-move when needed
        for column in _columns():
            if column.name not in present:
                batch.add_column(column)


def downgrade() -> None:
    with op.batch_alter_table("wsi_jobs") as batch:
        for column in _columns():
            batch.drop_column(column.name)
