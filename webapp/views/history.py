"""The history page (newest first, paginated, filterable) and its CSV export."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from flask import Blueprint, render_template, request, stream_with_context
from werkzeug.wrappers import Response

from webapp import audit
from webapp.db import db, utcnow
from webapp.forms import HistoryFilter
from webapp.model_service import model_service
from webapp.queries import history_select, paginate
from webapp.serialize import csv_rows

bp = Blueprint("history", __name__)


@bp.get("/history")
def index() -> str | tuple[str, int]:
    filters = HistoryFilter(request.args, model_service.bundle.classes)
    if not filters.validate():
        return render_template("history.html", filters=filters, page=None), 400
    page = paginate(history_select(filters))
    audit.record(audit.LIST, target="history", detail=f"{audit.describe_filters(filters.active())} page={page.page}")
    db.session.commit()
    return render_template("history.html", filters=filters, page=page)


@bp.get("/history.csv")
def export() -> Response | tuple[str, int]:
    filters = HistoryFilter(request.args, model_service.bundle.classes)
    if not filters.validate():
        return render_template("history.html", filters=filters, page=None), 400
    query = history_select(filters).execution_options(yield_per=200)
    classes = model_service.bundle.classes

    def generate() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for row in csv_rows(db.session.scalars(query), classes):
            writer.writerow(row)
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()

    audit.record(audit.EXPORT, target="history.csv", detail=audit.describe_filters(filters.active()))
    db.session.commit()
    name = f"cxr-history-{utcnow():%Y%m%d-%H%M%S}.csv"
    return Response(
        stream_with_context(generate()),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
