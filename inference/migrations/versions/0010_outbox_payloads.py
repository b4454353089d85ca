"""The outbox's payloads in their own table, beside the entries' rows: SQLite rewrites
a whole row on every update, so leasing and marking an entry whose payload is a
megabytes-large secondary capture rewrote the payload each time, and reading a column
stored after it walked its overflow pages.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if "outbox_payloads" not in inspector.get_table_names():
        op.create_table(
            "outbox_payloads",
            sa.Column("id", sa.String(36), primary_key=True),
            sa.Column("payload", sa.LargeBinary(), nullable=False),
        )
    # (a store adopted from before the migrations may have its outbox in the new shape)
    if "payload" in {c["name"] for c in inspector.get_columns("outbox")}:
        op.execute("INSERT INTO outbox_payloads (id, payload) SELECT id, payload FROM outbox")
        with op.batch_alter_table("outbox") as batch:
            batch.drop_column("payload")


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("payload", sa.LargeBinary(), nullable=True))
    op.execute(
        "UPDATE outbox SET payload = "
        "(SELECT payload FROM outbox_payloads WHERE outbox_payloads.id = outbox.id)"
    )
    op.drop_table("outbox_payloads")
