"""JSON API v1: create, read and list predictions, and the OpenAPI description. Authenticated by an
`Authorization: Bearer` token (CSRF-exempt) or the browser session (see `webapp.accounts`); errors are JSON
`{"error": message}` (see `webapp.errors`)."""

from __future__ import annotations

from flask import Blueprint, abort, request, url_for

from webapp import audit
from webapp.analysis import create_prediction, display_name
from webapp.db import db
from webapp.forms import ApiUploadForm, HistoryFilter
from webapp.model_service import model_service
from webapp.openapi import openapi_document
from webapp.queries import PAGE_PARAMETERS, history_select, paginate
from webapp.serialize import stored_json
from webapp.views.results import viewed

bp = Blueprint("api", __name__, url_prefix="/api/v1")


@bp.post("/predictions")
def create() -> tuple[dict, int, dict[str, str]]:
    form = ApiUploadForm()
    if not form.validate():
        abort(400, " ".join(" ".join(errors) for errors in form.errors.values()))
    storage = form.file.data
    record = create_prediction(storage.read(), display_name(storage.filename), form.reference.data, form.note.data)
    location = url_for("api.read", prediction_id=record.id, _external=True)
    return stored_json(record, reviews=True), 201, {"Location": location}


@bp.get("/predictions/<int:prediction_id>")
def read(prediction_id: int) -> dict:
    return stored_json(viewed(prediction_id), reviews=True)


@bp.get("/predictions")
def index() -> dict:
    filters = HistoryFilter(request.args, model_service.bundle.classes)
    # A misspelt filter must not silently return everything: name what is not understood.
    unknown = sorted(set(request.args) - {field.name for field in filters} - PAGE_PARAMETERS)
    if unknown:
        abort(400, f"Unknown query parameter{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}. "
                   f"Known: {', '.join(sorted({field.name for field in filters} | PAGE_PARAMETERS))}.")
    if not filters.validate():
        abort(400, filters.error_text())
    page = paginate(history_select(filters))
    audit.record(audit.LIST, target="api/predictions", detail=f"{audit.describe_filters(filters.active())} page={page.page}")
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
