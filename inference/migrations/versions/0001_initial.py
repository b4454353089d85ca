"""Initial schema: the outbox, lab history and alerts, whole-slide jobs.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("destination", sa.String(32), nullable=False),
        sa.Column("object_key", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("media_type", sa.String(100), nullable=False),
        sa.Column("report_id", sa.String(36), nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Float(), nullable=False),
        sa.Column("lease_until", sa.Float(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("delivered_at", sa.Float(), nullable=True),
    )
    op.create_index("ix_outbox_due", "outbox", ["state", "next_attempt_at"])
    op.create_index("ix_outbox_destination", "outbox", ["destination", "state"])

    op.create_table(
        "lab_history",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("patient_id", sa.String(128), nullable=False),
        sa.Column("analyte", sa.String(64), nullable=False),
        sa.Column("specimen_id", sa.String(128), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("collected_at_s", sa.Float(), nullable=False),
        sa.Column("usable", sa.Boolean(), nullable=False),
        sa.Column("received_at_s", sa.Float(), nullable=False),
        sa.UniqueConstraint("patient_id", "analyte", "specimen_id", name="uq_lab_history_result"),
    )
    op.create_index(
        "ix_lab_history_lookup", "lab_history", ["patient_id", "analyte", "collected_at_s"]
    )

    op.create_table(
        "lab_alerts",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("patient_id", sa.String(128), nullable=False),
        sa.Column("specimen_id", sa.String(128), nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("analyte", sa.String(64), nullable=True),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("message", sa.String(1000), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("source_id", sa.String(128), nullable=True),
        sa.Column("created_at_s", sa.Float(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("acked_by", sa.String(128), nullable=True),
        sa.Column("acked_at_s", sa.Float(), nullable=True),
        sa.Column("ack_reason", sa.String(1000), nullable=True),
    )
    op.create_index("ix_lab_alerts_state", "lab_alerts", ["state", "seq"])

    op.create_table(
        "wsi_jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("slide_path", sa.Text(), nullable=False),
        sa.Column("uploaded", sa.Boolean(), nullable=False),
        sa.Column("mpp", sa.Float(), nullable=True),
        sa.Column("slide", sa.JSON(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("submitted_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("tiles_total", sa.Integer(), nullable=True),
        sa.Column("tiles_done", sa.Integer(), nullable=False),
        sa.Column("rate_tiles_s", sa.Float(), nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("report_id", sa.String(36), nullable=True),
    )
    op.create_index("ix_wsi_jobs_state", "wsi_jobs", ["state"])


def downgrade() -> None:
    for table in ("wsi_jobs", "lab_alerts", "lab_history", "outbox"):
        op.drop_table(table)
