"""Clinicians' feedback on report findings (append-only), and the outbox indexed by
report (a report's delivery turnaround).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A store adopted without a version (store._adopt_unversioned) may already hold
    # today's declarations: create only what lacks.
    inspector = sa.inspect(op.get_bind())
    if "report_feedback" not in inspector.get_table_names():
        _create_feedback()
    if "ix_outbox_report" not in {i["name"] for i in inspector.get_indexes("outbox")}:
        op.create_index("ix_outbox_report", "outbox", ["report_id"])


def _create_feedback() -> None:
    op.create_table(
        "report_feedback",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("report_id", sa.String(36), nullable=False),
        sa.Column("pipeline", sa.String(16), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=True),
        sa.Column("model_version", sa.Integer(), nullable=True),
        sa.Column("finding", sa.String(200), nullable=False),
        sa.Column("region", sa.Integer(), nullable=True),
        sa.Column("model_present", sa.Boolean(), nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("answered_at_s", sa.Float(), nullable=False),
    )
    op.create_index("ix_report_feedback_report", "report_feedback", ["report_id", "seq"])


def downgrade() -> None:
    op.drop_index("ix_outbox_report", table_name="outbox")
    op.drop_index("ix_report_feedback_report", table_name="report_feedback")
    op.drop_table("report_feedback")
