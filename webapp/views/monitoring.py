"""The monitoring page of the model in use, and its plot (an SVG drawn on the server)."""

from __future__ import annotations

from flask import Blueprint, abort, render_template, request
from werkzeug.wrappers import Response

from webapp.forms import MonitoringFilter
from webapp.monitoring import DEFINITIONS, monitoring_report, monitoring_svg

bp = Blueprint("monitoring", __name__)


@bp.get("/monitoring")
def index() -> str | tuple[str, int]:
    filters = MonitoringFilter(request.args)
    if not filters.validate():
        return render_template("monitoring.html", filters=filters, report=None), 400
    report = monitoring_report(filters.date_from.data, filters.date_to.data)
    return render_template("monitoring.html", filters=filters, report=report, definitions=DEFINITIONS)


@bp.get("/monitoring.svg")
def plot() -> Response:
    filters = MonitoringFilter(request.args)
    if not filters.validate():
        abort(400, filters.error_text())
    report = monitoring_report(filters.date_from.data, filters.date_to.data)
    response = Response(monitoring_svg(report), mimetype="image/svg+xml")
    response.cache_control.private = True
    response.cache_control.no_cache = True
    return response
