"""The one error responder: every failure a request can meet becomes a message a person understands, with
its HTTP status, as JSON `{"error": message}` for the API and the health check and as the error page
elsewhere.

Faults of the service itself answer 503 with Retry-After, are logged with their cause and clear by
themselves once the cause is gone (nothing needs a restart):
* the model cannot be loaded (`webapp.model_service`);
* the database does not answer (connections are checked before use, so a restarted server is picked up
  on the next request);
* the upload folder is full or not writable: the upload's files written so far are removed and its row
  rolled back by `webapp.analysis.create_prediction`.
"""

from __future__ import annotations

import errno
from contextlib import suppress

from flask import Flask, current_app, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, SecurityError
from werkzeug.wrappers import Response

from cxr.errors import InputError, ModelBundleError
from webapp.db import DATABASE_ERRORS, db, describe_database_error
from webapp.model_service import ModelUnavailable

JSON_BLUEPRINTS = {"api", "health"}
API_PREFIX = "/api/"
RETRY_AFTER_SECONDS = 30
FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.ENOENT}


def wants_json() -> bool:
    """The API's and the health check's routes answer JSON, and so does any unknown address under /api/."""
    if request.blueprint is not None:
        return request.blueprint in JSON_BLUEPRINTS
    return request.path.startswith(API_PREFIX)


def respond(message: str, status: int, headers: dict[str, str] | None = None):
    headers = dict(headers or {})
    if status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    if wants_json():
        if status == 401:  # RFC 9110: a 401 names the scheme that would be accepted
            headers["WWW-Authenticate"] = 'Bearer realm="cxr"'
        return {"error": message}, status, headers
    return render_template("error.html", message=message, status=status), status, headers


def _http_message(exc: HTTPException) -> str:
    if exc.code == 413:
        return _too_large_message()
    if isinstance(exc, CSRFError):
        return "The form had expired or did not come from this site. Reload the page and try again."
    if exc.code == 404:
        return "Nothing was found at this address."
    if exc.code == 405:
        return f"The method {request.method} is not allowed here."
    return exc.description or exc.name


def _too_large_message() -> str:
    """Which configured limit a 413 from Werkzeug met: the whole request's (MAX_CONTENT_LENGTH), or the
    form's (a text field over MAX_FORM_MEMORY_SIZE, or more than MAX_FORM_PARTS parts)."""
    config = current_app.config
    limit = config["MAX_CONTENT_LENGTH"]
    if limit is None or (request.content_length or 0) > limit:
        return f"The upload is larger than the {byte_size(limit)} limit. Send fewer or smaller files."
    return (
        f"A form field is larger than the {byte_size(config['MAX_FORM_MEMORY_SIZE'])} limit for text, or the form "
        f"has more than {config['MAX_FORM_PARTS']} parts. Shorten it and send it again."
    )


def byte_size(count: int | None) -> str:
    """A configured size for people: 32 MB, 500 KB, 900 bytes (MB and KB of 1024)."""
    if count is None:
        return "configured"
    for unit, size in (("MB", 1024 * 1024), ("KB", 1024)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count} bytes"


def _storage_message(exc: OSError) -> str:
    if exc.errno in FULL:
        return (
            "The server's image storage is full, so the image was not saved (nothing was stored). "
            "Try again later; the administrator has been told in the server log."
        )
    if exc.errno in NOT_WRITABLE:
        return (
            "The server cannot write to its image storage folder, so the image was not saved (nothing was "
            "stored). Try again later; the administrator has been told in the server log."
        )
    return "The server could not read or write its image storage (an I/O error); nothing was stored. Try again later."


def init_app(app: Flask) -> None:
    @app.errorhandler(SecurityError)
    def untrusted_host(exc: SecurityError) -> Response:
        # A Host outside TRUSTED_HOSTS: no URL of this site can be built for it, so no page either.
        app.logger.warning("Refused a request for an untrusted host on %s %s", request.method, request.path)
        return Response("This server does not answer for the host name in the request.\n", 400, mimetype="text/plain")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return respond(_http_message(exc), exc.code or 500)

    @app.errorhandler(InputError)
    def input_error(exc: InputError):
        return respond(exc.message, exc.status)

    @app.errorhandler(ModelBundleError)
    def model_unavailable(exc: ModelBundleError):
        if not isinstance(exc, ModelUnavailable):
            app.logger.error("Model error on %s %s: %s", request.method, request.path, exc)
        return respond(str(exc), 503)

    @app.errorhandler(OSError)
    def storage_error(exc: OSError):
        app.logger.error(
            "Storage failure on %s %s: [Errno %s] %s: %s",
            request.method,
            request.path,
            exc.errno,
            exc.strerror or exc,
            getattr(exc, "filename", "") or "",
        )
        return respond(_storage_message(exc), 503)

    def database_error(exc: Exception):
        with suppress(Exception):  # the connection may be gone; the session is discarded anyway
            db.session.rollback()
        app.logger.error("Database failure on %s %s: %s", request.method, request.path, describe_database_error(exc))
        return respond(
            "The database is not reachable right now, so nothing was saved or read. "
            "Try again in a minute; the administrator has been told in the server log.",
            503,
        )

    for error_class in DATABASE_ERRORS:
        app.register_error_handler(error_class, database_error)
