"""the Grad-CAM heatmap stored small (heatmap_path); the overlay rendered on request, so overlay_path is
NULL for new predictions

Rows from before keep their stored overlay and get no heatmap. A downgrade cannot give the newer rows an
overlay file: their overlay_path becomes '' (the older `check-storage` reports them as having no path
recorded) and their heatmap files are left on disk.

Revision ID: i22b_small_heatmap
Revises: i24a_study_metadata
Create Date: 2026-12-06 22:40:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "i22b_small_heatmap"
down_revision = "i24a_study_metadata"
branch_labels = None
depends_on = None


def upgrade():
    # migrations/env.py turns SQLite's foreign keys off around batch table copies (reviews stay).
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("heatmap_path", sa.String(length=255), nullable=True))
        batch_op.alter_column("overlay_path", existing_type=sa.String(length=255), nullable=True)


def downgrade():
    predictions = sa.table("predictions", sa.column("overlay_path", sa.String(length=255)))
    op.execute(predictions.update().where(predictions.c.overlay_path.is_(None)).values(overlay_path=""))
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.alter_column("overlay_path", existing_type=sa.String(length=255), nullable=False)
        batch_op.drop_column("heatmap_path")
