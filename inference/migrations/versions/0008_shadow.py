"""Shadow models: each served batch a candidate version also ran, and per label how
the two versions compared (inference/shadow_store.py).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_COUNTS = ("n", "decided", "agree", "both_present", "serving_only", "shadow_only")
_SUMS = ("sum_x", "sum_y", "sum_xx", "sum_yy", "sum_xy")


def upgrade() -> None:
    present = set(sa.inspect(op.get_bind()).get_table_names())
    if "shadow_batches" not in present:
        op.create_table(
            "shadow_batches",
            sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("model_name", sa.String(128), nullable=False),
            sa.Column("serving_version", sa.Integer(), nullable=False),
            sa.Column("shadow_version", sa.Integer(), nullable=False),
            sa.Column("items", sa.Integer(), nullable=False),
            sa.Column("serving_s", sa.Float(), nullable=False),
            sa.Column("shadow_s", sa.Float(), nullable=False),
            sa.Column("compared_at_s", sa.Float(), nullable=False),
        )
        op.create_index(
            "ix_shadow_batches_model",
            "shadow_batches",
            ["model_name", "serving_version", "shadow_version"],
        )
    if "shadow_labels" not in present:
        op.create_table(
            "shadow_labels",
            sa.Column(
                "batch_seq", sa.Integer(), sa.ForeignKey("shadow_batches.seq"), nullable=False
            ),  # fmt: skip
            sa.Column("label", sa.String(200), nullable=False),
            *(sa.Column(name, sa.Integer(), nullable=False) for name in _COUNTS),
            *(sa.Column(name, sa.Float(), nullable=False) for name in _SUMS),
            sa.PrimaryKeyConstraint("batch_seq", "label", name="pk_shadow_labels"),
        )


def downgrade() -> None:
    op.drop_table("shadow_labels")
    op.drop_index("ix_shadow_batches_model", table_name="shadow_batches")
    op.drop_table("shadow_batches")
