"""Liveness and readiness for load balancers: the model is loaded, the database answers and the upload
folder takes a file with space to spare."""

from __future__ import annotations

from flask import Blueprint, current_app
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from webapp.db import db
from webapp.model_service import model_service
from webapp.storage_check import storage_status

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[dict, int]:
    bundle = model_service.load()  # retries a failed load (rate-limited), so a restored model shows
    try:
        db.session.execute(text("SELECT 1"))
        database = True
    except SQLAlchemyError:
        current_app.logger.exception("Health check: the database is not reachable")
        database = False
    storage = storage_status(current_app)
    healthy = bundle is not None and database and storage["ok"]
    body = {
        "status": "ok" if healthy else "unavailable",
        "model": {
            "loaded": bundle is not None,
            "version": getattr(bundle, "version", None),
            "error": model_service.error,
        },
        "database": {"reachable": database},
        "storage": storage,
    }
    return body, 200 if healthy else 503
