"""Application factory for the chest X-ray triage web app (Flask tutorial "flaskr" layout).

Run it with `flask --app app run` for development and `gunicorn wsgi:app` in production.
"""

from __future__ import annotations

import os
import time
from typing import Any

import click
from flask import Flask

from cxr.bundle import ModelBundle
from cxr.runtime import configure_threads
from webapp import auth, cli, db, errors, resilience, security, storage_check, templating, views
from webapp.config import load_config
from webapp.predictions import BUNDLE_KEY


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app. `test_config` replaces instance/config.py; it may carry INSTANCE_PATH and a
    ready MODEL_BUNDLE (tests share one, since loading TensorFlow takes seconds)."""
    instance_path = (test_config or {}).get("INSTANCE_PATH") or os.environ.get("CXR_INSTANCE_PATH")
    app = Flask(__name__, instance_path=instance_path and os.path.abspath(instance_path), instance_relative_config=True)
    load_config(app, test_config)
    resilience.register(app)  # 503 answers for model, database and storage faults; before db.init_app

    # Once per process, before serving anything: a missing or mismatched model stops start-up
    # with a ModelBundleError that names the file and how to restore or retrain it. Gunicorn workers
    # (STRICT_STARTUP false, see gunicorn.conf.py) start anyway and answer 503 until the model loads.
    bundle = app.config.get("MODEL_BUNDLE")
    if bundle is not None:
        app.extensions[BUNDLE_KEY] = bundle
    elif click.get_current_context(silent=True) is not None:
        pass  # a `flask ...` command: the model loads on first use, so account and database commands start fast
    elif resilience.strict(app):
        configure_threads()  # TensorFlow's thread pools, before it starts (cxr/runtime.py)
        started = time.perf_counter()
        bundle = ModelBundle(app.config["MODEL_DIR"])
        app.logger.info(
            "Loaded model %s from %s in %.1f s", bundle.version, bundle.directory, time.perf_counter() - started
        )
        app.extensions[BUNDLE_KEY] = bundle
    else:
        resilience.load_model(app)

    db.init_app(app)
    security.init_app(app)  # CSRF, security headers, session cookies, proxy headers
    auth.init_app(app)  # every route but sign-in and /healthz needs a user
    views.register(app)
    security.csrf.exempt(views.api.bp)  # bearer tokens; webapp.auth checks CSRF for session-signed API calls
    errors.register(app)
    templating.init_app(app)
    cli.init_app(app)
    storage_check.init_app(app)
    # First run creates the schema (and the first administrator); later runs apply new migrations
    # (an unreachable database is fatal only with STRICT_STARTUP).
    resilience.upgrade_schema_tolerantly(app, prepare_database)
    return app


def prepare_database(app: Flask) -> None:
    db.upgrade_schema(app)
    auth.ensure_first_admin(app)
