"""DICOM identifier offers in the server-side session; Idempotency-Key of API uploads

Revision ID: i21a_offers_and_idempotency
Revises: i20a_site_checks
Create Date: 2026-12-06 19:50:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "i21a_offers_and_idempotency"
down_revision = "i20a_site_checks"
branch_labels = None
depends_on = None


def upgrade():
    # Offers held in cookies before this revision are not carried over: they were never stored.
    with op.batch_alter_table("user_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reference_offers", sa.JSON(), nullable=True))
    # A new nullable column and a unique index (not a constraint): SQLite adds both in place, with no copy of
    # `predictions` that would touch the reviews referring to it. NULL keys never collide.
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=128), nullable=True))
        batch_op.create_index("ix_predictions_user_id_idempotency_key", ["user_id", "idempotency_key"], unique=True)


def downgrade():
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_index("ix_predictions_user_id_idempotency_key")
        batch_op.drop_column("idempotency_key")
    with op.batch_alter_table("user_sessions", schema=None) as batch_op:
        batch_op.drop_column("reference_offers")
