"""deliveries: receipt id and the phone's receipt (POST /receipts)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 13:30:00.000000

Three nullable columns (instant on PostgreSQL 11+: no rewrite) and a unique constraint on
receipt_id, whose index is built while writes to deliveries wait (a few seconds per million
rows; every row of before has NULL there).  Rows of before have no receipt id: their pushes
carried none, so no receipt can name them.  A web process of the previous release keeps
inserting deliveries during a rolling deploy (with NULL receipt ids) and never reads the new
columns.
Never import model code here: a migration must keep doing what it did when it was written.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("receipt_id", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("phone_received_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("phone_latency_ms", sa.Float(), nullable=True))
        batch_op.create_unique_constraint("uq_deliveries_receipt_id", ["receipt_id"])


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_constraint("uq_deliveries_receipt_id", type_="unique")
        batch_op.drop_column("phone_latency_ms")
        batch_op.drop_column("phone_received_at")
        batch_op.drop_column("receipt_id")
