"""The Flask serving side of the chest X-ray triage app: the application factory, storage, services,
blueprints and CLI. Nothing here imports the `training` package (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Flask

from webapp import (
    accounts,
    cli,
    db,
    errors,
    model_service,
    request_body,
    security,
    storage_check,
    templating,
    views,
)
from webapp.config import load_config

# templates/, static/ and models/ sit at the top of the project, beside this package.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app. `test_config` replaces instance/config.py; it may carry INSTANCE_PATH and a
    ready MODEL_BUNDLE (tests share one, since loading TensorFlow takes seconds).

    Creating an app neither loads the model nor touches the database schema: wsgi.py preloads the model
    in each worker, and `flask --app app init-db` or gunicorn's start-up hook upgrade the schema
    (webapp/startup.py)."""
    instance_path = (test_config or {}).get("INSTANCE_PATH") or os.environ.get("CXR_INSTANCE_PATH")
    app = Flask(
        __name__,
        root_path=str(PROJECT_ROOT),
        instance_relative_config=True,
        instance_path=os.path.abspath(instance_path) if instance_path else str(PROJECT_ROOT / "instance"),
    )
    load_config(app, test_config)
    model_service.init_app(app)  # the model is loaded on first use or by wsgi.py's preload
    db.init_app(app)
    request_body.init_app(app)  # bodies read whole before any database work; too slow ones cut off (408)
    security.init_app(app)  # CSRF, security headers, session cookies, proxy headers
    accounts.init_app(app)  # every route but sign-in and /healthz needs a user
    views.register(app)
    security.csrf.exempt(views.api.bp)  # bearer tokens; webapp.auth checks CSRF for session-signed API calls
    errors.init_app(app)
    templating.init_app(app)
    cli.init_app(app)
    storage_check.init_app(app)
    return app
