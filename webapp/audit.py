"""The audit trail: who did what, when, and from which address.

`record` adds an entry to the current database session, so that it is committed together with the
change it describes (or rolled back with it); callers that change nothing commit it themselves.
"""

from __future__ import annotations

from datetime import date

from flask import has_request_context, request
from flask_login import current_user
from sqlalchemy import Select, select

from webapp.db import AuditEvent, User, db, within_dates

SIGN_IN = "sign_in"
SIGN_IN_FAILED = "sign_in_failed"
SIGN_IN_THROTTLED = "sign_in_throttled"
SIGN_OUT = "sign_out"
PASSWORD_CHANGED = "password_changed"
UPLOAD = "upload"
UPLOAD_REFUSED = "upload_refused"  # the out-of-distribution gate refused it: target "model:<version>"
REFERENCE_SET = "reference_set"
VIEW = "view"
LIST = "list"  # a page of the history (browser or API), or the upload page's list of what was just stored
IMAGE = "image"  # an image file fetched, with an API token or in a browser (its viewer, a thumbnail)
REVIEW = "review"
TRIAGE = "triage"  # a prediction flagged urgent or not, claimed or released
EXPORT = "export"
USER_CREATED = "user_created"
USER_DISABLED = "user_disabled"
USER_ENABLED = "user_enabled"
PASSWORD_RESET = "password_reset"
TOKEN_CREATED = "token_created"
TOKEN_REVOKED = "token_revoked"
SITE_CHECK = "site_check"  # known-negative films run through the model before go-live: target "site_check:<id>"

ACTIONS = (
    SIGN_IN, SIGN_IN_FAILED, SIGN_IN_THROTTLED, SIGN_OUT, PASSWORD_CHANGED, UPLOAD, UPLOAD_REFUSED, REFERENCE_SET,
    VIEW, LIST, IMAGE, REVIEW, TRIAGE, EXPORT,
    USER_CREATED, USER_DISABLED, USER_ENABLED, PASSWORD_RESET, TOKEN_CREATED, TOKEN_REVOKED, SITE_CHECK,
)  # fmt: skip


def record(
    action: str,
    *,
    target: str | None = None,
    detail: str | None = None,
    user: User | None = None,
    username: str | None = None,
) -> AuditEvent:
    """Add an entry for `user` (default: the signed-in user, if any) to the session, uncommitted."""
    if user is None and has_request_context() and current_user.is_authenticated:
        user = current_user._get_current_object()
    event = AuditEvent(
        action=action,
        user_id=user.id if user is not None else None,
        username=user.username if user is not None else (username or None),
        target=target,
        detail=detail,
        address=request.remote_addr if has_request_context() else None,
    )
    db.session.add(event)
    return event


def describe_filters(active: dict[str, str]) -> str:
    """The filters of a list or an export, for the audit entry's detail."""
    return " ".join(f"{key}={value}" for key, value in active.items()) or "all predictions"


def filtered(
    username: str | None = None,
    action: str | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
    address: str | None = None,
) -> Select:
    """Newest first, narrowed by any of the filters (dates UTC, inclusive)."""
    query = select(AuditEvent).order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
    if username:
        query = query.where(AuditEvent.username == username.strip().lower())
    if action:
        query = query.where(AuditEvent.action == action)
    if address:
        query = query.where(AuditEvent.address == address.strip())
    return within_dates(query, AuditEvent.created_at, date_from, date_to)
