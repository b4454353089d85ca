"""Drift monitoring: each model's recent observations (inference/drift_store.py).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "drift_observations" in sa.inspect(op.get_bind()).get_table_names():
        return  # an unversioned store adopted with today's declarations
    op.create_table(
        "drift_observations",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("observed_at_s", sa.Float(), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
    )
    op.create_index(
        "ix_drift_observations_model",
        "drift_observations",
        ["model_name", "model_version", "seq"],
    )
    op.create_index(
        "ix_drift_observations_time",
        "drift_observations",
        ["model_name", "model_version", "observed_at_s"],
    )


def downgrade() -> None:
    op.drop_table("drift_observations")
