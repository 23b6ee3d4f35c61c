"""JSON API v1: create, read and list predictions, and the OpenAPI description. Authenticated by an
`Authorization: Bearer` token (CSRF-exempt) or the browser session (see `webapp.accounts`); errors are JSON
`{"error": message}` (see `webapp.errors`)."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Blueprint, abort, request, url_for
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.wrappers import Response

from webapp import audit
from webapp.analysis import confirm_reference, create_prediction, display_name, find_duplicate, record_duplicate
from webapp.db import Prediction, db
from webapp.forms import ApiUploadForm, HistoryFilter, MonitoringFilter
from webapp.model_service import model_service
from webapp.monitoring import monitoring_report
from webapp.openapi import openapi_document
from webapp.queries import PAGE_PARAMETERS, history_select, paginate
from webapp.readings import READINGS, STATUSES
from webapp.reviews import own_review, review_problem, save_review
from webapp.serialize import review_json, stored_json
from webapp.views.results import report_download, viewed

bp = Blueprint("api", __name__, url_prefix="/api/v1")


IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII without spaces, as the column holds


@bp.post("/predictions")
def create() -> tuple[dict, int, dict[str, str]]:
    """Analyse and store an upload (201).

    A file already stored (same SHA-256) is not stored again: the answer is its existing prediction (200,
    `"duplicate": true`), unless `?force=1` asks for a new one. With an `Idempotency-Key` header, a retry by
    the same user with the same key returns the prediction stored first (200) instead of storing the film
    again: a client that lost the answer (a dropped connection, a restarted worker) may simply send the
    request again, with or without `force`."""
    force = request.args.get("force", "0")
    if force not in ("0", "1"):
        abort(400, "'force' must be 1 (store a file uploaded before again) or 0.")
    key = request.headers.get("Idempotency-Key")
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        abort(400, "The Idempotency-Key header must be 1 to 128 printable ASCII characters without spaces.")
    if key is not None and (first := _stored_with_key(key)) is not None:
        return _created(first, 200)
    form = ApiUploadForm()
    if not form.validate():
        abort(400, " ".join(" ".join(errors) for errors in form.errors.values()))
    storage = form.file.data
    data = storage.read()
    existing = None if force == "1" else find_duplicate(data)
    if existing is not None:
        record_duplicate(existing)
        location = url_for("api.read", prediction_id=existing.id, _external=True)
        return {**stored_json(existing, reviews=True), "duplicate": True}, 200, {"Location": location}
    try:
        record = create_prediction(
            data,
            display_name(storage.filename),
            form.reference.data,
            form.note.data,
            idempotency_key=key,
            typed=form.typed_study(),
        )
    except IntegrityError:  # the same key's concurrent request stored first (its files were removed)
        first = _stored_with_key(key) if key is not None else None
        if first is None:
            raise
        return _created(first, 200)
    return _created(record, 201)


def _stored_with_key(key: str) -> Prediction | None:
    return db.session.scalar(
        select(Prediction).where(Prediction.user_id == current_user.id, Prediction.idempotency_key == key)
    )


def _created(record: Prediction, status: int) -> tuple[dict, int, dict[str, str]]:
    location = url_for("api.read", prediction_id=record.id, _external=True)
    answer = {**stored_json(record, reviews=True), "duplicate": False}
    if record.suggested_reference:  # a DICOM header's identifiers, offered and not stored (POST .../reference)
        answer["suggested_reference"] = record.suggested_reference
    return answer, status, {"Location": location}


@bp.get("/predictions/<int:prediction_id>")
def read(prediction_id: int) -> dict:
    return stored_json(viewed(prediction_id), reviews=True)


@bp.get("/predictions/<int:prediction_id>/report.pdf")
def report(prediction_id: int) -> Response:
    """The result page's one-page PDF report, for integrations that file it in a record system."""
    return report_download(prediction_id)


REVIEW_FIELDS = ("reading", "status", "comment")


def _json_object() -> dict[str, Any]:
    """The request's JSON object, or 400 with the reason: not JSON, not an object, nested too deeply for the
    parser (a RecursionError), or text that cannot be stored (a lone UTF-16 surrogate such as "\\ud800")."""
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        abort(400, "The JSON body is nested too deeply.")
    if not isinstance(body, dict):
        abort(400, "Send a JSON object with the header Content-Type: application/json.")
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):
        abort(400, "The JSON body holds text that is not valid Unicode (a lone surrogate escape).")
    return body


@bp.post("/predictions/<int:prediction_id>/reviews")
def review(prediction_id: int) -> tuple[dict, int]:
    """The caller's reading of the film: created (201), or updated with its earlier version kept (200)."""
    record = db.get_or_404(Prediction, prediction_id)
    body = _json_object()
    unknown = sorted(set(body) - set(REVIEW_FIELDS))
    if unknown:
        abort(400, f"Unknown field(s): {', '.join(unknown)}; send {', '.join(REVIEW_FIELDS)}.")
    # Each value's type is checked before it is used, so that a list or an object gets 400, never a 500.
    for name in ("reading", "status"):
        if not isinstance(body.get(name), str):
            abort(400, f"'{name}' must be a string: {' or '.join(READINGS if name == 'reading' else STATUSES)}.")
    comment = body.get("comment")
    if comment is not None and not isinstance(comment, str):
        abort(400, "'comment' must be a string or null.")
    reading, status = body["reading"].strip(), body["status"].strip()
    problem = review_problem(reading, status, comment)
    if problem:
        abort(422, problem)
    user = current_user._get_current_object()
    created = save_review(record, user, reading, status, comment)
    return review_json(own_review(record, user)), 201 if created else 200


@bp.post("/predictions/<int:prediction_id>/reference")
def reference(prediction_id: int) -> dict:
    """Confirm a reference for a prediction stored without one (e.g. the upload's `suggested_reference`)."""
    record = db.get_or_404(Prediction, prediction_id)
    value = _json_object().get("reference")
    if not isinstance(value, str):
        abort(400, "'reference' must be a string.")
    confirm_reference(record, value)
    return stored_json(record, reviews=True)


@bp.get("/monitoring")
def monitoring() -> dict:
    filters = MonitoringFilter(request.args)
    if not filters.validate():
        abort(400, filters.error_text())
    return monitoring_report(filters.date_from.data, filters.date_to.data).as_json()


@bp.get("/predictions")
def index() -> dict:
    filters = HistoryFilter(request.args, model_service.bundle.classes)
    # A misspelt filter must not silently return everything: name what is not understood.
    unknown = sorted(set(request.args) - {field.name for field in filters} - PAGE_PARAMETERS)
    if unknown:
        abort(
            400,
            f"Unknown query parameter{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}. "
            f"Known: {', '.join(sorted({field.name for field in filters} | PAGE_PARAMETERS))}.",
        )
    if not filters.validate():
        abort(400, filters.error_text())
    page = paginate(history_select(filters))
    audit.record(
        audit.LIST, target="api/predictions", detail=f"{audit.describe_filters(filters.active())} page={page.page}"
    )
    db.session.commit()

    def link(number: int | None) -> str | None:
        args = {**filters.active(), "page": number, "per_page": page.per_page}
        return url_for("api.index", **args, _external=True) if number else None

    return {
        "items": [stored_json(record) for record in page.items],
        "page": page.page,
        "per_page": page.per_page,
        "pages": page.pages,
        "total": page.total,
        "next": link(page.next_num),
        "prev": link(page.prev_num),
    }


@bp.get("/openapi.json")
def openapi() -> dict:
    return openapi_document(model_service.bundle.classes)
