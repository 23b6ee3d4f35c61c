"""Liveness and readiness for load balancers: the model is loaded and the database answers."""

from __future__ import annotations

from flask import Blueprint, current_app
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from webapp.db import db
from webapp.predictions import BUNDLE_KEY

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[dict, int]:
    bundle = current_app.extensions.get(BUNDLE_KEY)
    try:
        db.session.execute(text("SELECT 1"))
        database = True
    except SQLAlchemyError:
        current_app.logger.exception("Health check: the database is not reachable")
        database = False
    healthy = bundle is not None and database
    body = {
        "status": "ok" if healthy else "unavailable",
        "model": {"loaded": bundle is not None, "version": getattr(bundle, "version", None)},
        "database": {"reachable": database},
    }
    return body, 200 if healthy else 503
