"""The review workspace: the report index (its worklist) and sign-in sessions.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    present = set(sa.inspect(op.get_bind()).get_table_names())
    if "report_index" not in present:
        _create_report_index()
    if "ui_sessions" not in present:
        op.create_table(
            "ui_sessions",
            sa.Column("token_sha256", sa.String(64), primary_key=True),
            sa.Column("key_sha256", sa.String(64), nullable=False),
            sa.Column("csrf_token", sa.String(64), nullable=False),
            sa.Column("created_at_s", sa.Float(), nullable=False),
            sa.Column("expires_at_s", sa.Float(), nullable=False),
        )
        op.create_index("ix_ui_sessions_expires_at_s", "ui_sessions", ["expires_at_s"])


def _create_report_index() -> None:
    op.create_table(
        "report_index",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("pipeline", sa.String(16), nullable=False),
        sa.Column("urgency", sa.Integer(), nullable=False),
        sa.Column("stat", sa.Boolean(), nullable=False),
        sa.Column("positive", sa.Boolean(), nullable=False),
        sa.Column("assessed", sa.Boolean(), nullable=False),
        sa.Column("review", sa.String(16), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.String(128), nullable=True),
        sa.Column("created_at_s", sa.Float(), nullable=False),
    )
    op.create_index(
        "ix_report_index_page", "report_index", ["pipeline", "urgency", "created_at_s", "id"]
    )
    op.create_index(
        "ix_report_index_review",
        "report_index",
        ["pipeline", "review", "urgency", "created_at_s", "id"],
    )


def downgrade() -> None:
    op.drop_table("ui_sessions")
    op.drop_table("report_index")
