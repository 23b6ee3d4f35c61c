"""predictions record the deployed outcome: covid, another class, or indeterminate

Revision ID: c5d8e1f40b22
Revises: b41c2e9d7a10
Create Date: 2026-12-03 11:00:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "c5d8e1f40b22"
down_revision = "b41c2e9d7a10"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("decision", sa.String(length=64), nullable=True))
    # Earlier models had no indeterminate outcome: their decision was the class.
    op.execute("UPDATE predictions SET decision = label WHERE decision IS NULL")
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.alter_column("decision", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_index(batch_op.f("ix_predictions_decision"), ["decision"], unique=False)


def downgrade():
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_predictions_decision"))
        batch_op.drop_column("decision")
