"""Jinja filters and globals shared by the templates."""

from __future__ import annotations

from datetime import datetime

from flask import Flask, request, url_for
from flask_login import current_user
from markupsafe import Markup

from cxr.decision import Rule
from cxr.overlay import OVERLAY_ALPHA, jet_palette
from webapp.db import Prediction
from webapp.model_service import model_service
from webapp.readings import READINGS, STATUSES
from webapp.serialize import image_url, timestamp
from webapp.study import PORTABLE_WARNING, origin_text, study_facts, view_name, viewer_url
from webapp.triage import active_claim, unread_count
from webapp.wording import class_label, decision_label, ood_hint, reason_text


def percent(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f} %"


def number(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def utc(value: datetime | None) -> Markup | str:
    """A stored (naive UTC) timestamp as a <time> element in UTC, which app.js rewrites to the reader's
    local time (keeping the UTC text as its title)."""
    if value is None:
        return "—"
    return Markup('<time datetime="{}" data-local>{:%Y-%m-%d %H:%M} UTC</time>').format(timestamp(value), value)


def page_url(page: int, **params: str) -> str:
    """This page's URL with `page` replaced and the other query parameters kept."""
    return url_for(request.endpoint, **{**request.view_args, **params, "page": page})


def rule_of(record: Prediction) -> Rule | None:
    """The decision rule that made `record` (its threshold and indeterminate cut-offs), when that model is the
    one loaded; None for a prediction of another model version."""
    bundle = model_service.loaded
    return bundle.rule if bundle is not None and bundle.version == record.model_version else None


def init_app(app: Flask) -> None:
    app.jinja_env.trim_blocks = True
    app.jinja_env.lstrip_blocks = True
    app.add_template_filter(percent)
    app.add_template_filter(number)
    app.add_template_filter(utc)
    app.add_template_global(page_url)
    app.add_template_global(image_url)
    app.add_template_global(rule_of)
    app.add_template_global(active_claim, "claim_of")
    app.add_template_global(ood_hint)
    app.add_template_filter(decision_label)
    app.add_template_filter(reason_text)
    app.add_template_filter(class_label)
    app.add_template_global(READINGS, "READINGS")
    app.add_template_global(STATUSES, "STATUSES")

    @app.context_processor
    def worklist() -> dict[str, int | None]:
        # The navigation's unread count: only for a signed-in user, and only on pages (not JSON or files).
        if not current_user.is_authenticated or current_user.must_change_password:
            return {"unread_count": None}
        return {"unread_count": unread_count()}

    for function in (origin_text, study_facts, view_name, viewer_url):
        app.add_template_global(function)
    app.add_template_global(PORTABLE_WARNING, "portable_warning")
    # The viewer colours the stored heatmap with the overlay's own table and opacity (static/viewer.js):
    # 'jet' as 256 × r, g, b bytes in hex.
    app.add_template_global(bytes(jet_palette()).hex(), "jet_colormap")
    app.add_template_global(OVERLAY_ALPHA, "overlay_alpha")

    @app.context_processor
    def model_version() -> dict[str, str | None]:
        # Pages (sign-in, error pages) still render while the model is unavailable.
        bundle = model_service.loaded
        return {"model_version": bundle.version if bundle is not None else "unavailable"}
