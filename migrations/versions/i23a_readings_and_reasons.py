"""reviews record the clinician's reading (RSNA categories) and whether it is preliminary or final, instead of
agree/disagree and a class; predictions record why an indeterminate decision is indeterminate, and keep a
DICOM's full bit depth for the viewer, and the worklist's urgent flag and claim

Revision ID: i23a_readings_and_reasons
Revises: i21a_offers_and_idempotency
Create Date: 2026-12-06 20:00:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "i23a_readings_and_reasons"
down_revision = "i21a_offers_and_idempotency"
branch_labels = None
depends_on = None

# The vocabulary when this migration was written (webapp/readings.py); a migration must not follow later code.
POSITIVE_CLASS = "covid"
NON_COVID_CLASS = "normal"
# An old review's class, as a reading: the COVID class was a typical appearance, "normal" (which meant "no
# COVID-19 call") negative for pneumonia, and any other class (e.g. viral_pneumonia of a 4-class model)
# another finding, whose name is kept at the start of the comment.
OLD_CLASS_READINGS = {POSITIVE_CLASS: "typical", NON_COVID_CLASS: "negative"}
# Reviews were saved as the clinician's reading; nothing was preliminary before this revision.
OLD_STATUS = "final"

predictions = sa.table("predictions", sa.column("id", sa.Integer), sa.column("label", sa.String))
reviews = sa.table(
    "reviews",
    sa.column("id", sa.Integer),
    sa.column("prediction_id", sa.Integer),
    sa.column("agrees", sa.Boolean),
    sa.column("correct_class", sa.String),
    sa.column("reading", sa.String),
    sa.column("status", sa.String),
    sa.column("comment", sa.Text),
)
review_edits = sa.table(
    "review_edits",
    sa.column("id", sa.Integer),
    sa.column("review_id", sa.Integer),
    sa.column("agrees", sa.Boolean),
    sa.column("correct_class", sa.String),
    sa.column("reading", sa.String),
    sa.column("status", sa.String),
    sa.column("comment", sa.Text),
)


def _reading(correct_class, comment):
    reading = OLD_CLASS_READINGS.get(correct_class, "other")
    if reading == "other":
        comment = f"Earlier review: correct class {correct_class}." + (f" {comment}" if comment else "")
    return reading, comment


def _upgrade_rows(connection, table):
    for row in connection.execute(sa.select(table.c.id, table.c.correct_class, table.c.comment)).all():
        reading, comment = _reading(row.correct_class, row.comment)
        connection.execute(
            table.update().where(table.c.id == row.id).values(reading=reading, status=OLD_STATUS, comment=comment)
        )


def upgrade():
    connection = op.get_bind()
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("indeterminate_reasons", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("depth_path", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("depth_window", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("urgent", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column("claimed_by_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("claimed_at", sa.DateTime(), nullable=True))
        batch_op.create_index(batch_op.f("ix_predictions_urgent"), ["urgent"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_predictions_claimed_by_id_users"), "users", ["claimed_by_id"], ["id"]
        )
    # NULL for the predictions stored so far: their reason was not recorded (the page says so), and their
    # DICOM's full bit depth was not kept (the viewer windows the 8-bit film).

    for name, table in (("reviews", reviews), ("review_edits", review_edits)):
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.add_column(sa.Column("reading", sa.String(length=16), nullable=True))
            batch_op.add_column(sa.Column("status", sa.String(length=16), nullable=True))
        _upgrade_rows(connection, table)
        # Foreign keys are off during migrations on SQLite (migrations/env.py), so rebuilding `reviews`
        # does not cascade to `review_edits`.
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.alter_column("reading", existing_type=sa.String(length=16), nullable=False)
            batch_op.alter_column("status", existing_type=sa.String(length=16), nullable=False)
            batch_op.drop_column("agrees")
            batch_op.drop_column("correct_class")


def _old_class(reading, label):
    """A reading as the old schema's class: typical is the COVID class, anything else the model's own class
    when that was not COVID, else the non-COVID class."""
    if reading == "typical":
        return POSITIVE_CLASS
    return label if label != POSITIVE_CLASS else NON_COVID_CLASS


def downgrade():
    connection = op.get_bind()
    for name, table in (("reviews", reviews), ("review_edits", review_edits)):
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.add_column(sa.Column("agrees", sa.Boolean(), nullable=True))
            batch_op.add_column(sa.Column("correct_class", sa.String(length=64), nullable=True))
        owner = reviews if table is reviews else reviews.join(review_edits, review_edits.c.review_id == reviews.c.id)
        query = sa.select(table.c.id, table.c.reading, predictions.c.label).select_from(
            owner.join(predictions, predictions.c.id == reviews.c.prediction_id)
        )
        for row in connection.execute(query).all():
            correct_class = _old_class(row.reading, row.label)
            connection.execute(
                table.update()
                .where(table.c.id == row.id)
                .values(correct_class=correct_class, agrees=correct_class == row.label)
            )
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.alter_column("agrees", existing_type=sa.Boolean(), nullable=False)
            batch_op.alter_column("correct_class", existing_type=sa.String(length=64), nullable=False)
            batch_op.drop_column("status")
            batch_op.drop_column("reading")
    # In place rather than by copying the table: SQLite drops an unindexed column since 3.35.
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_predictions_claimed_by_id_users"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_predictions_urgent"))
        batch_op.drop_column("claimed_at")
        batch_op.drop_column("claimed_by_id")
        batch_op.drop_column("urgent")
    with op.batch_alter_table("predictions", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("depth_window")
        batch_op.drop_column("depth_path")
        batch_op.drop_column("indeterminate_reasons")
