"""JSON API v1: create, read and list predictions, and the OpenAPI description. Authenticated by an
`Authorization: Bearer` token (CSRF-exempt) or the browser session (see `webapp.accounts`); errors are JSON
`{"error": message}` (see `webapp.errors`)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, request, url_for
from flask_login import current_user

from webapp import audit
from webapp.analysis import confirm_reference, create_prediction, display_name
from webapp.db import Prediction, db
from webapp.forms import ApiUploadForm, HistoryFilter, MonitoringFilter
from webapp.model_service import model_service
from webapp.monitoring import monitoring_report
from webapp.openapi import openapi_document
from webapp.queries import PAGE_PARAMETERS, history_select, paginate
from webapp.reviews import MAX_COMMENT, own_review, review_problem, save_review
from webapp.serialize import review_json, stored_json
from webapp.views.results import viewed

bp = Blueprint("api", __name__, url_prefix="/api/v1")


@bp.post("/predictions")
def create() -> tuple[dict, int, dict[str, str]]:
    form = ApiUploadForm()
    if not form.validate():
        abort(400, " ".join(" ".join(errors) for errors in form.errors.values()))
    storage = form.file.data
    record = create_prediction(
        storage.read(), display_name(storage.filename), form.reference.data, form.note.data, typed=form.typed_study()
    )
    location = url_for("api.read", prediction_id=record.id, _external=True)
    answer = stored_json(record, reviews=True)
    if record.suggested_reference:  # a DICOM header's identifiers, offered and not stored (POST .../reference)
        answer["suggested_reference"] = record.suggested_reference
    return answer, 201, {"Location": location}


@bp.get("/predictions/<int:prediction_id>")
def read(prediction_id: int) -> dict:
    return stored_json(viewed(prediction_id), reviews=True)


REVIEW_FIELDS = {"agree", "correct_class", "comment"}


def _json_object() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, "Send a JSON object with the header Content-Type: application/json.")
    return body


@bp.post("/predictions/<int:prediction_id>/reviews")
def review(prediction_id: int) -> tuple[dict, int]:
    """The caller's review of the prediction: created (201), or updated with its earlier version kept (200)."""
    record = db.get_or_404(Prediction, prediction_id)
    body = _json_object()
    unknown = sorted(set(body) - REVIEW_FIELDS)
    if unknown:
        abort(400, f"Unknown field(s): {', '.join(unknown)}; send agree, correct_class and comment.")
    agrees = body.get("agree")
    if not isinstance(agrees, bool):
        abort(400, "'agree' must be true or false.")
    correct_class, comment = body.get("correct_class"), body.get("comment")
    for name, value in (("correct_class", correct_class), ("comment", comment)):
        if value is not None and not isinstance(value, str):
            abort(400, f"'{name}' must be a string or null.")
    if comment is not None and len(comment) > MAX_COMMENT:
        abort(400, f"'comment' is longer than {MAX_COMMENT} characters.")
    problem = review_problem(model_service.bundle.classes, record.label, agrees, (correct_class or "").strip() or None)
    if problem:
        abort(422, problem)
    user = current_user._get_current_object()
    created = save_review(record, user, agrees, (correct_class or "").strip() or None, comment)
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
