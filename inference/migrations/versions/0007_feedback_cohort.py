"""Agreement per subgroup: each feedback row keeps its report's site, sex and age band.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_COLUMNS = (("site", 64), ("sex", 8), ("age_band", 8))


def upgrade() -> None:
    present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("report_feedback")}
    with op.batch_alter_table("report_feedback") as batch:
        for name, length in _COLUMNS:
            if name not in present:
                batch.add_column(sa.Column(name, sa.String(length), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("report_feedback") as batch:
        for name, _ in _COLUMNS:
            batch.drop_column(name)
