"""deliveries: an index on (user_id, event_id) for the search by user

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 12:45:00.000000

`callpush trace --user`, `?user=` and the dashboard's user page find a user's pushes through it
without reading anyone else's.  Building it locks writes to deliveries while it runs (a few
seconds per million rows); on a big table create it first without blocking pushes, then
migrate (the migration skips an index that exists):

    CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_deliveries_user_id_event_id
        ON deliveries (user_id, event_id);

Never import model code here: a migration must keep doing what it did when it was written.
"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_user_id_event_id",
        "deliveries",
        ["user_id", "event_id"],
        unique=False,
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_user_id_event_id", table_name="deliveries", if_exists=True)
