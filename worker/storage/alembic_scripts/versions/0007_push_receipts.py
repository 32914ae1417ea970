"""deliveries: receipt id and the phone's receipt (POST /receipts)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 13:30:00.000000

Three nullable columns (instant on PostgreSQL 11+: no rewrite) and a unique index on
receipt_id.  Building it blocks writes to deliveries while it runs (a few seconds per million
rows; every row of before has NULL there); on a big table add the column and build the index
first without blocking pushes, then migrate (the migration skips what exists):

    ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS receipt_id VARCHAR(32);
    CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ix_deliveries_receipt_id
        ON deliveries (receipt_id);

Rows of before have no receipt id: their pushes carried none, so no receipt can name them.
A web process of the previous release keeps inserting deliveries during a rolling deploy (with
NULL receipt ids) and never reads the new columns. Never import model code here: a migration must
keep doing what it did when it was written.
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
    existing = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("deliveries")}
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        if "receipt_id" not in existing:  # an operator may have added it first (see above)
            batch_op.add_column(sa.Column("receipt_id", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("phone_received_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("phone_latency_ms", sa.Float(), nullable=True))
    op.create_index(
        "ix_deliveries_receipt_id", "deliveries", ["receipt_id"], unique=True, if_not_exists=True
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_receipt_id", table_name="deliveries", if_exists=True)
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("phone_latency_ms")
        batch_op.drop_column("phone_received_at")
        batch_op.drop_column("receipt_id")
