"""study metadata and PACS provenance on predictions: DICOM UIDs, accession number, view position,
laterality, modality, study date, origin (upload or the calling AE title) and when results were sent

Revision ID: i24a_study_metadata
Revises: i23a_readings_and_reasons
Create Date: 2026-12-06 19:45:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "i24a_study_metadata"
down_revision = "i23a_readings_and_reasons"
branch_labels = None
depends_on = None

PACS_ONLY = "origin != 'upload'"


def upgrade():
    # migrations/env.py turns SQLite's foreign keys off around batch table copies (reviews stay).
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("study_instance_uid", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("series_instance_uid", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("sop_instance_uid", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("accession_number", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("view_position", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("laterality", sa.String(length=1), nullable=True))
        batch_op.add_column(sa.Column("modality", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("study_date", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("origin", sa.String(length=64), server_default="upload", nullable=False))
        batch_op.add_column(sa.Column("results_sent_at", sa.DateTime(), nullable=True))
        batch_op.create_index(batch_op.f("ix_predictions_study_instance_uid"), ["study_instance_uid"], unique=False)
        batch_op.create_index(batch_op.f("ix_predictions_study_date"), ["study_date"], unique=False)
        batch_op.create_index(
            "uq_predictions_pacs_instance",
            ["sop_instance_uid"],
            unique=True,
            sqlite_where=sa.text(PACS_ONLY),
            postgresql_where=sa.text(PACS_ONLY),
        )


def downgrade():
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_index("uq_predictions_pacs_instance")
        batch_op.drop_index(batch_op.f("ix_predictions_study_date"))
        batch_op.drop_index(batch_op.f("ix_predictions_study_instance_uid"))
        for column in (
            "results_sent_at",
            "origin",
            "study_date",
            "modality",
            "laterality",
            "view_position",
            "accession_number",
            "sop_instance_uid",
            "series_instance_uid",
            "study_instance_uid",
        ):
            batch_op.drop_column(column)
