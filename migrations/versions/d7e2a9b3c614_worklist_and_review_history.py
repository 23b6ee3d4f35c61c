"""worklist: p(covid) as a column to sort on; one review per clinician per prediction, with its edit history

Revision ID: d7e2a9b3c614
Revises: c5d8e1f40b22
Create Date: 2026-12-10 09:00:00.000000

"""

from collections import defaultdict

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "d7e2a9b3c614"
down_revision = "c5d8e1f40b22"
branch_labels = None
depends_on = None

# cxr.decision.POSITIVE_CLASS when this migration was written; a migration must not follow later code.
POSITIVE_CLASS = "covid"

predictions = sa.table(
    "predictions",
    sa.column("id", sa.Integer),
    sa.column("probabilities", sa.JSON),
    sa.column("positive_probability", sa.Float),
)
reviews = sa.table(
    "reviews",
    sa.column("id", sa.Integer),
    sa.column("prediction_id", sa.Integer),
    sa.column("user_id", sa.Integer),
    sa.column("created_at", sa.DateTime),
    sa.column("updated_at", sa.DateTime),
    sa.column("agrees", sa.Boolean),
    sa.column("correct_class", sa.String),
    sa.column("comment", sa.Text),
)
review_edits = sa.table(
    "review_edits",
    sa.column("review_id", sa.Integer),
    sa.column("saved_at", sa.DateTime),
    sa.column("agrees", sa.Boolean),
    sa.column("correct_class", sa.String),
    sa.column("comment", sa.Text),
)


def upgrade():
    connection = op.get_bind()
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("positive_probability", sa.Float(), nullable=True))
    # The probabilities are JSON, read the same way on SQLite and PostgreSQL by the driver, not in SQL.
    for row_id, probabilities in connection.execute(sa.select(predictions.c.id, predictions.c.probabilities)):
        value = (probabilities or {}).get(POSITIVE_CLASS)
        if value is not None:
            connection.execute(
                predictions.update().where(predictions.c.id == row_id).values(positive_probability=float(value))
            )
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_predictions_positive_probability"), ["positive_probability"], unique=False)

    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.add_column(sa.Column("updated_at", sa.DateTime(), nullable=True))
    op.execute("UPDATE reviews SET updated_at = created_at")

    # Before this revision a clinician could review a prediction several times. Their newest review becomes
    # their one review and the older ones its earlier versions, so nothing they wrote is lost.
    rows = connection.execute(
        sa.select(reviews).where(reviews.c.user_id.is_not(None)).order_by(reviews.c.created_at, reviews.c.id)
    ).all()
    by_reader = defaultdict(list)
    for row in rows:
        by_reader[(row.prediction_id, row.user_id)].append(row)
    earlier_versions = []
    for versions in by_reader.values():
        *older, newest = versions
        if not older:
            continue
        earlier_versions += [
            {
                "review_id": newest.id,
                "saved_at": row.created_at,
                "agrees": row.agrees,
                "correct_class": row.correct_class,
                "comment": row.comment,
            }
            for row in older
        ]
        connection.execute(reviews.delete().where(reviews.c.id.in_([row.id for row in older])))
        connection.execute(reviews.update().where(reviews.c.id == newest.id).values(created_at=older[0].created_at))

    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.alter_column("updated_at", existing_type=sa.DateTime(), nullable=False)
        batch_op.create_index(batch_op.f("ix_reviews_updated_at"), ["updated_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_reviews_user_id"), ["user_id"], unique=False)
        batch_op.create_unique_constraint("uq_reviews_prediction_id_user_id", ["prediction_id", "user_id"])

    # Created only now: on SQLite the batch above copies and drops `reviews`, and with foreign keys on, that
    # drop would cascade to the rows of a table that refers to it.
    op.create_table(
        "review_edits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("review_id", sa.Integer(), nullable=False),
        sa.Column("saved_at", sa.DateTime(), nullable=False),
        sa.Column("agrees", sa.Boolean(), nullable=False),
        sa.Column("correct_class", sa.String(length=64), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["review_id"], ["reviews.id"], name=op.f("fk_review_edits_review_id_reviews"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_edits")),
    )
    with op.batch_alter_table("review_edits", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_review_edits_review_id"), ["review_id"], unique=False)
    if earlier_versions:
        connection.execute(review_edits.insert(), earlier_versions)


def downgrade():
    connection = op.get_bind()
    # The earlier versions become reviews of their own again, as the older schema kept them; they are read
    # before `review_edits` is dropped, and written back once `reviews` has its old shape.
    edits = connection.execute(
        sa.select(review_edits, reviews.c.prediction_id, reviews.c.user_id).join(
            reviews, reviews.c.id == review_edits.c.review_id
        )
    ).all()
    with op.batch_alter_table("review_edits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_review_edits_review_id"))
    op.drop_table("review_edits")
    # The surviving row is the newest version: it was written when the review was last saved.
    op.execute("UPDATE reviews SET created_at = updated_at")
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.drop_constraint("uq_reviews_prediction_id_user_id", type_="unique")
        batch_op.drop_index(batch_op.f("ix_reviews_user_id"))
        batch_op.drop_index(batch_op.f("ix_reviews_updated_at"))
        batch_op.drop_column("updated_at")
    old_reviews = sa.table(
        "reviews",
        sa.column("prediction_id", sa.Integer),
        sa.column("user_id", sa.Integer),
        sa.column("created_at", sa.DateTime),
        sa.column("agrees", sa.Boolean),
        sa.column("correct_class", sa.String),
        sa.column("comment", sa.Text),
    )
    if edits:
        connection.execute(
            old_reviews.insert(),
            [
                {
                    "prediction_id": e.prediction_id,
                    "user_id": e.user_id,
                    "created_at": e.saved_at,
                    "agrees": e.agrees,
                    "correct_class": e.correct_class,
                    "comment": e.comment,
                }
                for e in edits
            ],
        )
    # Not by copying the table (batch mode's way on SQLite): dropping the old `predictions` would cascade to
    # every review. SQLite drops an unindexed column in place since 3.35.
    with op.batch_alter_table("predictions", schema=None, recreate="never") as batch_op:
        batch_op.drop_index(batch_op.f("ix_predictions_positive_probability"))
        batch_op.drop_column("positive_probability")
