"""Clinician reviews: one per clinician per prediction, editable, each edit keeping the version it replaces.

The review form (`webapp.forms.ReviewForm`) and the JSON API check a reading with `review_problem` and save
it with `save_review`, so both follow the same rules.
"""

from __future__ import annotations

from flask import abort
from sqlalchemy.exc import IntegrityError

from webapp import audit
from webapp.db import Prediction, Review, ReviewEdit, User, db, utcnow

MAX_COMMENT = 2000


def review_problem(classes: list[str], predicted: str, agrees: bool, correct_class: str | None) -> str | None:
    """Why this reading cannot be saved, or None. `correct_class` is needed only to disagree."""
    if agrees:
        if correct_class and correct_class not in classes:
            return f"Unknown class '{correct_class}' (expected one of {', '.join(classes)})."
        if correct_class and correct_class != predicted:
            return f"To agree, the correct class is the predicted one ({predicted}); disagree to name another."
        return None
    if not correct_class:
        return "Choose the correct class."
    if correct_class not in classes:
        return f"Unknown class '{correct_class}' (expected one of {', '.join(classes)})."
    if correct_class == predicted:
        return "The correct class must differ from the predicted one when you disagree."
    return None


def own_review(record: Prediction, user: User) -> Review | None:
    return next((review for review in record.reviews if review.user_id == user.id), None)


def save_review(record: Prediction, user: User, agrees: bool, correct_class: str | None, comment: str | None) -> bool:
    """Add or update `user`'s review of `record` and commit it with its audit entry; True if it is new.

    An update first copies the version it replaces into the review's edit history. A first review saved
    meanwhile by the same clinician elsewhere (another tab) is refused with 409 rather than overwritten unseen."""
    comment = (comment or "").strip() or None
    correct_class = record.label if agrees else correct_class
    review = own_review(record, user)
    now = utcnow()
    if review is None:
        record.reviews.insert(
            0,
            Review(
                agrees=agrees,
                correct_class=correct_class,
                comment=comment,
                user_id=user.id,
                user=user,
                created_at=now,
                updated_at=now,
                edits=[],
            ),
        )
    else:
        review.edits.insert(
            0,
            ReviewEdit(
                saved_at=review.updated_at,
                agrees=review.agrees,
                correct_class=review.correct_class,
                comment=review.comment,
            ),
        )
        review.agrees, review.correct_class, review.comment, review.updated_at = agrees, correct_class, comment, now
        # The relationship is ordered newest first; keep the in-memory list so for the answer.
        record.reviews.sort(key=lambda r: (r.updated_at, r.id), reverse=True)
    verdict = "agrees" if agrees else "disagrees"
    audit.record(
        audit.REVIEW,
        target=f"prediction:{record.id}",
        user=user,
        detail=verdict if review is None else f"edited: {verdict}",
    )
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        abort(409, "You reviewed this prediction meanwhile (in another window). Reload it to see or edit that review.")
    return review is None
