"""The worklist as a triage queue: films flagged urgent go first, and a clinician claims a film while reading
it so that nobody else reads it meanwhile. A claim lapses after `CLAIM_MINUTES` (a clinician called away
does not hold a film for ever) and ends when its clinician saves a final reading or releases it."""

from __future__ import annotations

from datetime import timedelta

from flask import abort
from sqlalchemy import func, select

from webapp import audit
from webapp.db import Prediction, User, db, utcnow

CLAIM_MINUTES = 30


def active_claim(record: Prediction) -> User | None:
    """Who holds `record` now, if anyone (a lapsed claim holds nothing)."""
    if record.claimed_by is None or record.claimed_at is None:
        return None
    return record.claimed_by if utcnow() - record.claimed_at < timedelta(minutes=CLAIM_MINUTES) else None


def refuse_if_claimed_by_another(record: Prediction, user: User) -> None:
    """409 when another clinician holds `record`: two clinicians do not read the same film at once."""
    holder = active_claim(record)
    if holder is not None and holder.id != user.id:
        until = record.claimed_at + timedelta(minutes=CLAIM_MINUTES)
        abort(
            409,
            f"{holder.username} is reading this film (claimed at {record.claimed_at:%H:%M} UTC, until "
            f"{until:%H:%M} UTC unless they release it or save a final reading).",
        )


def claim(record: Prediction, user: User) -> None:
    refuse_if_claimed_by_another(record, user)
    record.claimed_by, record.claimed_by_id, record.claimed_at = user, user.id, utcnow()
    audit.record(audit.TRIAGE, target=f"prediction:{record.id}", detail="claimed", user=user)
    db.session.commit()


def release(record: Prediction, user: User, detail: str = "released") -> None:
    """End `user`'s claim of `record` (committed with the caller's other changes when `detail` says so)."""
    refuse_if_claimed_by_another(record, user)
    record.claimed_by, record.claimed_by_id, record.claimed_at = None, None, None
    audit.record(audit.TRIAGE, target=f"prediction:{record.id}", detail=detail, user=user)
    db.session.commit()


def set_urgent(record: Prediction, user: User, urgent: bool) -> None:
    record.urgent = urgent
    audit.record(audit.TRIAGE, target=f"prediction:{record.id}", detail="urgent" if urgent else "not urgent", user=user)
    db.session.commit()


def unread_count() -> int:
    """Predictions nobody has reviewed yet: the worklist's length, shown in the navigation."""
    return db.session.scalar(select(func.count()).select_from(Prediction).where(~Prediction.reviews.any())) or 0
