"""Clinician reviews: one per clinician per prediction, editable, each edit keeping the version it replaces.

A review is the clinician's own reading of the film in the RSNA consensus categories for COVID-19 on chest
radiographs (typical, indeterminate or atypical appearance, negative for pneumonia), or another finding,
with a comment, and is preliminary or final. Whether it agrees with the model is computed from the reading.
The review form (`webapp.forms.ReviewForm`) and the JSON API check a review with `review_problem` and save it
with `save_review`, so both follow the same rules.
"""

from __future__ import annotations

from flask import abort
from sqlalchemy.exc import IntegrityError

from webapp import audit
from webapp.db import Prediction, Review, ReviewEdit, User, db, utcnow
from webapp.readings import OTHER, READINGS, STATUSES, agrees_with_model
from webapp.triage import refuse_if_claimed_by_another

MAX_COMMENT = 2000


def review_problem(reading: str | None, status: str | None, comment: str | None) -> str | None:
    """Why this review cannot be saved, or None."""
    if not reading:
        return f"Choose your reading: {', '.join(READINGS)}."
    if reading not in READINGS:
        return f"Unknown reading '{reading}' (expected one of {', '.join(READINGS)})."
    if not status:
        return "Choose whether the review is preliminary or final."
    if status not in STATUSES:
        return f"Unknown status '{status}' (expected preliminary or final)."
    if reading == OTHER and not (comment or "").strip():
        return "Name the other finding in the comment."
    if comment is not None and len(comment) > MAX_COMMENT:
        return f"The comment is longer than {MAX_COMMENT} characters."
    return None


def own_review(record: Prediction, user: User) -> Review | None:
    return next((review for review in record.reviews if review.user_id == user.id), None)


def save_review(record: Prediction, user: User, reading: str, status: str, comment: str | None) -> bool:
    """Add or update `user`'s review of `record` and commit it with its audit entry; True if it is new.

    An update first copies the version it replaces into the review's edit history. A first review saved
    meanwhile by the same clinician elsewhere (another tab) is refused with 409 rather than overwritten unseen."""
    refuse_if_claimed_by_another(record, user)
    comment = (comment or "").strip() or None
    review = own_review(record, user)
    now = utcnow()
    if review is None:
        record.reviews.insert(
            0,
            Review(
                reading=reading,
                status=status,
                comment=comment,
                user_id=user.id,
                user=user,
                prediction=record,
                created_at=now,
                updated_at=now,
                edits=[],
            ),
        )
    else:
        earlier = ReviewEdit(
            saved_at=review.updated_at, reading=review.reading, status=review.status, comment=review.comment
        )
        review.edits.insert(0, earlier)
        review.reading, review.status, review.comment, review.updated_at = reading, status, comment, now
        # The relationship is ordered newest first; keep the in-memory list so for the answer.
        record.reviews.sort(key=lambda r: (r.updated_at, r.id), reverse=True)
    verdict = f"{status} {reading}, {'agrees' if agrees_with_model(reading, record.decision) else 'disagrees'}"
    if status == "final" and record.claimed_by_id == user.id:  # a final reading ends the clinician's claim
        record.claimed_by, record.claimed_by_id, record.claimed_at = None, None, None
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
