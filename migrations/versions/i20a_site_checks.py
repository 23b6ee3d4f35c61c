"""site checks: a hospital's known-negative films run through the model before go-live

Revision ID: i20a_site_checks
Revises: e3f1a7c9d402
Create Date: 2026-12-06 19:45:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "i20a_site_checks"
down_revision = "e3f1a7c9d402"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "site_checks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("username", sa.String(length=64), nullable=True),
        sa.Column("label", sa.String(length=128), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("films", sa.Integer(), nullable=False),
        sa.Column("refused", sa.Integer(), nullable=False),
        sa.Column("unreadable", sa.Integer(), nullable=False),
        sa.Column("covid", sa.Integer(), nullable=False),
        sa.Column("indeterminate", sa.Integer(), nullable=False),
        sa.Column("normal", sa.Integer(), nullable=False),
        sa.Column("p_covid", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_site_checks_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_site_checks")),
    )
    with op.batch_alter_table("site_checks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_site_checks_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_site_checks_user_id"), ["user_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_site_checks_model_version"), ["model_version"], unique=False)


def downgrade():
    op.drop_table("site_checks")
