"""initial schema

Revision ID: 7731408ec4c6
Revises:
Create Date: 2026-11-23 13:04:06.724002

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "7731408ec4c6"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "predictions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("image_path", sa.String(length=255), nullable=False),
        sa.Column("overlay_path", sa.String(length=255), nullable=False),
        sa.Column("thumbnail_path", sa.String(length=255), nullable=False),
        sa.Column("label", sa.String(length=64), nullable=False),
        sa.Column("probabilities", sa.JSON(), nullable=False),
        sa.Column("cnn_probabilities", sa.JSON(), nullable=False),
        sa.Column("threshold", sa.Double(), nullable=True),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("elapsed_ms", sa.Double(), nullable=False),
        sa.Column("ood_score", sa.Double(), nullable=False),
        sa.Column("reference", sa.String(length=128), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_predictions")),
    )
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_predictions_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_predictions_label"), ["label"], unique=False)
        batch_op.create_index(batch_op.f("ix_predictions_reference"), ["reference"], unique=False)
        batch_op.create_index(batch_op.f("ix_predictions_sha256"), ["sha256"], unique=False)

    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prediction_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("agrees", sa.Boolean(), nullable=False),
        sa.Column("correct_class", sa.String(length=64), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["prediction_id"], ["predictions.id"], name=op.f("fk_reviews_prediction_id_predictions"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reviews")),
    )
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reviews_prediction_id"), ["prediction_id"], unique=False)


def downgrade():
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reviews_prediction_id"))

    op.drop_table("reviews")
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_predictions_sha256"))
        batch_op.drop_index(batch_op.f("ix_predictions_reference"))
        batch_op.drop_index(batch_op.f("ix_predictions_label"))
        batch_op.drop_index(batch_op.f("ix_predictions_created_at"))

    op.drop_table("predictions")
