"""Application factory for the chest X-ray triage web app (Flask tutorial "flaskr" layout).

Run it with `flask --app app run` for development and `gunicorn wsgi:app` in production.
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Flask
from flask_wtf import CSRFProtect

from cxr.bundle import ModelBundle
from webapp import cli, db, errors, templating, views
from webapp.config import load_config
from webapp.predictions import BUNDLE_KEY

csrf = CSRFProtect()


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app. `test_config` replaces instance/config.py; it may carry INSTANCE_PATH and a
    ready MODEL_BUNDLE (tests share one, since loading TensorFlow takes seconds)."""
    instance_path = (test_config or {}).get("INSTANCE_PATH") or os.environ.get("CXR_INSTANCE_PATH")
    app = Flask(__name__, instance_path=instance_path and os.path.abspath(instance_path), instance_relative_config=True)
    load_config(app, test_config)

    # Once per process, before serving anything: a missing or mismatched model stops start-up
    # with a ModelBundleError that names the file and how to restore or retrain it.
    bundle = app.config.get("MODEL_BUNDLE")
    if bundle is None:
        started = time.perf_counter()
        bundle = ModelBundle(app.config["MODEL_DIR"])
        app.logger.info(
            "Loaded model %s from %s in %.1f s", bundle.version, bundle.directory, time.perf_counter() - started
        )
    app.extensions[BUNDLE_KEY] = bundle

    db.init_app(app)
    csrf.init_app(app)
    views.register(app)
    csrf.exempt(views.api.bp)
    errors.register(app)
    templating.init_app(app)
    cli.init_app(app)
    db.upgrade_schema(app)  # first run creates the schema; later runs apply new migrations
    return app
