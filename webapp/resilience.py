"""Faults the service survives: a model that cannot be loaded, a database that does not answer, an upload
folder that is full or not writable. Each is answered with 503 and a message that says what is wrong
(JSON `{"error": ...}` under /api/ and /healthz, the error page elsewhere) with a Retry-After header,
logged with its cause, and each clears by itself once the cause is gone: nothing needs a restart.

* The model: with `STRICT_STARTUP` false (gunicorn workers, see gunicorn.conf.py) a worker that cannot
  load the model still starts; every request that needs it answers 503 and retries the load at most
  every `MODEL_RETRY_SECONDS`. A worker whose model is loaded keeps it in memory, so removing the files
  only shows when a worker (re)starts. With `STRICT_STARTUP` (the default: `flask run`, the CLI, tests)
  `create_app` raises instead, so a wrong model directory stops start-up at once.
* The database: connection and operational errors become 503; connections are checked before use
  (`pool_pre_ping`), so a restarted database server is picked up on the next request. A worker that
  starts while the database is down starts anyway (with `STRICT_STARTUP` false) and upgrades the schema
  later (`flask --app app init-db`, or the next worker start).
* Storage: OSError while writing images (ENOSPC, EROFS, EACCES, ...) becomes 503; the upload's files
  written so far are removed and its row rolled back by `create_prediction`. /healthz reports whether the
  upload folder takes a file and how much space is left.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from flask import Flask, current_app, render_template, request
from sqlalchemy import exc as sa_exc

from cxr.bundle import ModelBundle
from cxr.errors import ModelBundleError

BUNDLE_KEY = "cxr.bundle"  # the same key as webapp.predictions.BUNDLE_KEY
STATE_KEY = "cxr.model_state"
RETRY_AFTER_SECONDS = 30
FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.ENOENT}
DATABASE_ERRORS = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError, sa_exc.DisconnectionError)

DEFAULTS = {
    "STRICT_STARTUP": True,  # raise from create_app when the model or the database is unusable
    "MODEL_RETRY_SECONDS": 5.0,  # at most one load attempt per worker in this many seconds
    "STORAGE_MIN_FREE_BYTES": 16 * 1024 * 1024,  # /healthz reports unavailable below this
}


class ModelUnavailable(ModelBundleError):
    """No model is loaded in this worker; the message says why and how to restore it."""


class _ModelState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.error: str | None = None
        self.last_attempt = float("-inf")


def _state(app: Flask) -> _ModelState:
    return app.extensions.setdefault(STATE_KEY, _ModelState())


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)


def strict(app: Flask) -> bool:
    return _as_bool(app.config.get("STRICT_STARTUP", True))


def load_model(app: Flask) -> ModelBundle | None:
    """Load the bundle from MODEL_DIR into `app` (thread-safe, rate-limited); None when it cannot be."""
    bundle = app.extensions.get(BUNDLE_KEY)
    if bundle is not None:
        return bundle
    state = _state(app)
    with state.lock:
        bundle = app.extensions.get(BUNDLE_KEY)
        if bundle is not None:
            return bundle
        if time.monotonic() - state.last_attempt < float(app.config["MODEL_RETRY_SECONDS"]):
            return None
        state.last_attempt = time.monotonic()
        from cxr.runtime import configure_threads

        configure_threads()  # before TensorFlow starts in this process
        started = time.perf_counter()
        try:
            bundle = ModelBundle(app.config["MODEL_DIR"])
        except ModelBundleError as exc:
            if state.error != str(exc):
                app.logger.error("The model cannot be loaded; predictions answer 503 until it can: %s", exc)
            state.error = str(exc)
            return None
        except Exception as exc:  # a truncated or unreadable file fails inside Keras or joblib
            message = f"The model in {app.config['MODEL_DIR']} cannot be read ({type(exc).__name__}: {exc})."
            app.logger.exception("The model cannot be loaded; predictions answer 503 until it can")
            state.error = message
            return None
        if state.error:
            app.logger.warning("The model is available again (version %s)", bundle.version)
        state.error = None
        app.extensions[BUNDLE_KEY] = bundle
        app.logger.info("Loaded model %s from %s in %.1f s", bundle.version, bundle.directory,
                        time.perf_counter() - started)
        return bundle


def require_model(app: Flask | None = None) -> ModelBundle:
    """The loaded bundle, loading it if needed; raises `ModelUnavailable` (answered 503) when it cannot be."""
    app = app or current_app._get_current_object()
    bundle = load_model(app)
    if bundle is None:
        raise ModelUnavailable(
            "The prediction model is not available on this server right now. "
            + (_state(app).error or "It is being loaded; try again in a few seconds.")
        )
    return bundle


def model_error(app: Flask | None = None) -> str | None:
    app = app or current_app._get_current_object()
    return _state(app).error


def check_model_files(directory: Path) -> str:
    """The checks `ModelBundle` makes before TensorFlow starts (files present, card matches them), for a
    gunicorn master to refuse to start on a wrong model directory; returns the model version."""
    import json

    from cxr.bundle import CARD_FILE, HASHED_FILES, RETRAIN_HINT, artifact_version
    from cxr.preprocess import PARAMETERS

    directory = Path(directory)
    missing = [n for n in (*HASHED_FILES, CARD_FILE) if not (directory / n).is_file()]
    if missing:
        raise ModelBundleError(f"The model directory {directory} lacks {', '.join(missing)}. {RETRAIN_HINT}")
    card = json.loads((directory / CARD_FILE).read_text())
    version = artifact_version(directory)
    if card.get("version") != version or card.get("preprocessing") != PARAMETERS:
        raise ModelBundleError(f"The model files in {directory} do not match its {CARD_FILE}. {RETRAIN_HINT}")
    return version


def check_configured_model() -> str:
    """`check_model_files` on the MODEL_DIR that `create_app` would use (environment, instance/config.py),
    without creating the app: for the gunicorn master, which must not start TensorFlow."""
    from webapp.config import load_config

    root = Path(__file__).resolve().parent.parent
    instance = os.environ.get("CXR_INSTANCE_PATH")
    app = Flask("app", root_path=str(root), instance_path=instance and os.path.abspath(instance),
                instance_relative_config=True)
    load_config(app, None)
    return check_model_files(app.config["MODEL_DIR"])


def upgrade_schema_tolerantly(app: Flask, upgrade) -> None:
    """Run `upgrade(app)`; unless STRICT_STARTUP, a database that does not answer is logged, not fatal."""
    try:
        upgrade(app)
    except DATABASE_ERRORS as exc:
        if strict(app):
            raise
        app.logger.error("The database is not reachable at start-up; requests that need it answer 503 until it "
                         "is (%s)", _reason(exc))


def storage_status(app: Flask | None = None) -> dict[str, Any]:
    """Whether the upload folder takes a new file, and the space left on its file system."""
    app = app or current_app._get_current_object()
    folder = Path(app.config["UPLOAD_FOLDER"])
    status: dict[str, Any] = {"writable": False, "free_bytes": None, "error": None}
    probe = folder / f".probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        status["writable"] = True
    except OSError as exc:
        status["error"] = f"[Errno {exc.errno}] {exc.strerror}"
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass
    try:
        status["free_bytes"] = shutil.disk_usage(folder).free
    except OSError:
        pass
    low = status["free_bytes"] is not None and status["free_bytes"] < int(app.config["STORAGE_MIN_FREE_BYTES"])
    if low and status["error"] is None:
        status["error"] = "less free space than STORAGE_MIN_FREE_BYTES"
    status["ok"] = status["writable"] and not low
    return status


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return f"{type(orig or exc).__name__}: {orig or exc}".splitlines()[0][:300]


def _respond(message: str, status: int = 503):
    if request.path.startswith("/api/") or request.path == "/healthz":
        body, code = {"error": message}, status
    else:
        body, code = render_template("error.html", message=message, status=status), status
    return body, code, {"Retry-After": str(RETRY_AFTER_SECONDS)}


def _storage_message(exc: OSError) -> str:
    if exc.errno in FULL:
        return ("The server's image storage is full, so the image was not saved (nothing was stored). "
                "Try again later; the administrator has been told in the server log.")
    if exc.errno in NOT_WRITABLE:
        return ("The server cannot write to its image storage folder, so the image was not saved (nothing was "
                "stored). Try again later; the administrator has been told in the server log.")
    return "The server could not read or write its image storage (an I/O error); nothing was stored. Try again later."


def register(app: Flask) -> None:
    """Defaults, database engine options and the 503 error handlers."""
    for key, value in DEFAULTS.items():
        app.config.setdefault(key, value)
    options = dict(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    options.setdefault("pool_pre_ping", True)  # a restarted database server is picked up on the next request
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = options

    @app.errorhandler(ModelBundleError)
    def model_unavailable(exc: ModelBundleError):
        if not isinstance(exc, ModelUnavailable):
            app.logger.error("Model error on %s %s: %s", request.method, request.path, exc)
        return _respond(str(exc))

    @app.errorhandler(OSError)
    def storage_error(exc: OSError):
        app.logger.error("Storage failure on %s %s: [Errno %s] %s: %s", request.method, request.path, exc.errno,
                         exc.strerror or exc, getattr(exc, "filename", "") or "")
        return _respond(_storage_message(exc))

    for error_class in DATABASE_ERRORS:

        @app.errorhandler(error_class)
        def database_error(exc: Exception):
            from webapp.db import db

            try:
                db.session.rollback()
            except Exception:  # noqa: BLE001 - the connection may be gone; the session is discarded anyway
                pass
            app.logger.error("Database failure on %s %s: %s", request.method, request.path, _reason(exc))
            return _respond("The database is not reachable right now, so nothing was saved or read. "
                            "Try again in a minute; the administrator has been told in the server log.")
