"""webhook_events: body digest (replays under new ids) and allow_stale

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 09:00:00.000000

Existing rows get no digest (NULL: not deduplicated on their body; a replay of one older than
intake.max_event_age_seconds is refused as stale anyway) and allow_stale = false.  The server
default lets web processes of the previous release keep inserting during a rolling deploy.
Never import model code here: a migration must keep doing what it did when it was written.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("body_digest", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("allow_stale", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.create_unique_constraint(
            "uq_webhook_events_api_key_body_digest", ["api_key", "body_digest"]
        )


def downgrade() -> None:
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.drop_constraint("uq_webhook_events_api_key_body_digest", type_="unique")
        batch_op.drop_column("allow_stale")
        batch_op.drop_column("body_digest")
