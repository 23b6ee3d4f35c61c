"""What runs once per deployment before requests are served, outside the application factory: the model
directory check and the database schema. `flask --app app init-db` (in `make run`) and gunicorn's
`on_starting` hook call these; creating an app (every test, every `flask` command) runs neither."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from flask import Flask

from cxr.bundle import ModelBundle
from webapp import accounts
from webapp.db import DATABASE_ERRORS, describe_database_error, upgrade_schema


def prepare_database(app: Flask) -> None:
    """Create or upgrade the schema; on a database without users, create the first administrator.

    Unless STRICT_STARTUP, a database that does not answer is logged, not fatal: the service starts,
    answers 503 where it needs the database, and the schema is upgraded by the next start or init-db."""
    try:
        upgrade_schema(app)
        accounts.ensure_first_admin(app)
    except DATABASE_ERRORS as exc:
        if app.config["STRICT_STARTUP"]:
            raise
        app.logger.error(
            "The database is not reachable at start-up; requests that need it answer 503 until it is (%s)",
            describe_database_error(exc),
        )


def check_model_directory(app: Flask) -> str:
    """`ModelBundle.verify` on the app's MODEL_DIR without starting TensorFlow (a gunicorn master must not:
    TensorFlow does not survive a fork); returns the model version."""
    return ModelBundle.verify(Path(app.config["MODEL_DIR"]))["version"]


def gunicorn_master_start() -> None:
    """Refuse to start on a model directory that cannot work, then bring the schema up to date, before any
    worker loads TensorFlow (gunicorn.conf.py, `on_starting`, which has set CXR_STRICT_STARTUP=false)."""
    from webapp import create_app

    app = create_app()
    check_model_directory(app)
    prepare_database(app)


def start_dicom_listener() -> subprocess.Popen | None:
    """With CXR_DICOM_LISTEN set, start `flask --app app dicom-listen` beside gunicorn's workers (its own
    process: it loads the model and, without CXR_QUEUE_URL, analyses what it receives); gunicorn.conf.py
    stops it when gunicorn exits. None when not asked for."""
    from webapp.config import as_bool

    if not as_bool(os.environ.get("CXR_DICOM_LISTEN", "")):
        return None
    return subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "dicom-listen"])
