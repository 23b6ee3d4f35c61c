"""Configuration: defaults, then `CXR_*` environment variables (plus DATABASE_URL and SECRET_KEY),
then `instance/config.py` (or the test configuration), then a generated secret key if none was set."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from flask import Flask

SECRET_KEY_FILE = "secret_key"
# Films, overlays, the SQLite database and its WAL files hold patient data: readable by the service's own
# user only. Set for the whole process before anything is written (the CLI, gunicorn's workers, tests).
PRIVATE_UMASK = 0o077


def load_config(app: Flask, test_config: dict[str, Any] | None) -> None:
    os.umask(PRIVATE_UMASK)
    instance = Path(app.instance_path)
    instance.mkdir(parents=True, exist_ok=True)
    instance.chmod(0o700)  # also when an earlier version or `make` created it world-readable
    app.config.from_mapping(
        MODEL_DIR=Path(app.root_path, "models"),
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{instance / 'cxr.sqlite'}",
        UPLOAD_FOLDER=instance / "uploads",
        MAX_CONTENT_LENGTH=32 * 1024 * 1024,  # whole request; larger uploads get 413
        MAX_FILES_PER_UPLOAD=20,
        # A request body is read whole before the app runs; after the grace period it must arrive at this
        # average rate (bytes a second), else it is cut off with 408 (webapp/request_body.py).
        BODY_GRACE_SECONDS=5.0,
        BODY_MIN_RATE=32 * 1024,
        PER_PAGE=20,
        SQLITE_BUSY_TIMEOUT_MS=15_000,
        THUMBNAIL_SIZE=256,
        # Accounts (webapp/accounts.py)
        PASSWORD_HASH_METHOD="scrypt",
        PERMANENT_SESSION_LIFETIME=8 * 3600,  # seconds: a shift; then sign in again
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=False,  # also Secure on any HTTPS request (webapp/security.py)
        SIGN_IN_WINDOW_SECONDS=15 * 60,
        SIGN_IN_LIMIT_PER_ACCOUNT=5,  # failed sign-ins per account and address per window
        SIGN_IN_LIMIT_PER_ADDRESS=20,  # failed sign-ins per address per window, whatever the account
        SIGN_IN_BACKOFF_SECONDS=0.5,  # then each attempt on an account failed from many addresses waits
        SIGN_IN_BACKOFF_MAX_SECONDS=4.0,
        TRUSTED_PROXIES=0,  # reverse proxies whose X-Forwarded-* headers are believed
        # Host names this service answers for, e.g. CXR_TRUSTED_HOSTS='["cxr.hospital.example"]': absolute
        # URLs (redirects) are built from the Host header. None accepts any (development, `make run`).
        TRUSTED_HOSTS=None,
        # Faults (webapp/model_service.py, webapp/startup.py, webapp/storage_check.py)
        STRICT_STARTUP=True,  # a model or database that cannot be used stops start-up (else: answers unavailable)
        MODEL_RETRY_SECONDS=5.0,  # at most one model load attempt per worker in this many seconds
        ANALYSIS_SLOTS=1,  # uploads decoded and predicted at once per process (webapp/model_service.py)
        STORAGE_MIN_FREE_BYTES=16 * 1024 * 1024,  # /healthz reports unavailable below this
        # PACS (webapp/pacs/): the DICOM listener, the analysis queue and where results go (README, "PACS")
        DICOM_AE_TITLE="CXR_TRIAGE",
        DICOM_HOST="127.0.0.1",  # the listener's bind address; 0.0.0.0 to hear the hospital network
        DICOM_PORT=11112,
        DICOM_ALLOWED=None,  # calling AE titles accepted, e.g. '["ORTHANC"]' or "ORTHANC,MODALITY1"; None: any
        DICOM_MAX_BYTES=32 * 1024 * 1024,  # one instance; larger ones are refused (as an upload's 413)
        DICOM_MAX_ASSOCIATIONS=4,  # at once; more are rejected (busy)
        DICOM_TIMEOUT_SECONDS=30,  # network, ACSE and DIMSE timeouts of one association
        PACS_DESTINATION=None,  # "AET@host:port": results go back by C-STORE
        PACS_STOW_URL=None,  # or a DICOMweb root: results go back by STOW-RS
        DICOMWEB_URL=None,  # the DICOMweb root `pacs-pull` asks (QIDO-RS, WADO-RS)
        PACS_VIEWER_URL=None,  # e.g. "https://pacs.example/ohif/viewer?StudyInstanceUIDs={study_uid}"
        QUEUE_URL=None,  # redis://host:6379/0 for RQ workers on any host; None: in the listener's process
        QUEUE_JOB_TIMEOUT=300,  # seconds one analysis may take before RQ stops it (and retries it)
        QUEUE_RETRIES=3,  # a job that fails or whose worker dies is retried this often
        QUEUE_MAINTENANCE_SECONDS=60,  # how often a worker looks for jobs of dead workers
    )
    app.config.from_prefixed_env("CXR")  # CXR_MODEL_DIR=..., CXR_MAX_CONTENT_LENGTH=1048576, ...
    if os.environ.get("DATABASE_URL"):
        app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DATABASE_URL"]
    for name, key in (("SECRET_KEY", "SECRET_KEY"), ("CXR_ADMIN_PASSWORD", "ADMIN_PASSWORD")):
        if os.environ.get(name):  # taken verbatim: from_prefixed_env would parse "1234…" as a number
            app.config[key] = os.environ[name]
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
    else:
        app.config.from_mapping(test_config)
    # Relative paths are taken from the project root (models) and the instance folder (uploads).
    app.config["MODEL_DIR"] = Path(app.root_path, app.config["MODEL_DIR"])
    app.config["UPLOAD_FOLDER"] = Path(app.instance_path, app.config["UPLOAD_FOLDER"])
    app.config["STRICT_STARTUP"] = as_bool(app.config["STRICT_STARTUP"])
    options = dict(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    options.setdefault("pool_pre_ping", True)  # a restarted database server is picked up on the next request
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = options
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = instance_secret_key(instance / SECRET_KEY_FILE)


def as_bool(value: Any) -> bool:
    """An environment-style switch: "", "0", "false", "no" and "off" are false."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)


def instance_secret_key(path: Path) -> str:
    """The key stored at `path`, created once (mode 0600) if absent; safe when several workers race."""
    if not path.exists():
        candidate = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        try:
            os.link(candidate, path)  # atomic create-if-absent: the first worker's key wins
        except FileExistsError:
            pass
        finally:
            candidate.unlink()
    return path.read_text().strip()
