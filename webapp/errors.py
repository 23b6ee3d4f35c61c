"""Error responses: JSON `{"error": message}` for the API and health check, an HTML page elsewhere."""

from __future__ import annotations

from flask import Flask, current_app, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from cxr.errors import InputError


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.path == "/healthz"


def _respond(message: str, status: int):
    if _wants_json():
        # RFC 9110: a 401 names the scheme that would be accepted.
        headers = {"WWW-Authenticate": 'Bearer realm="cxr"'} if status == 401 else {}
        return {"error": message}, status, headers
    return render_template("error.html", message=message, status=status), status


def _http_message(exc: HTTPException) -> str:
    if exc.code == 413:
        limit = current_app.config["MAX_CONTENT_LENGTH"] / (1024 * 1024)
        return f"The upload is larger than the {limit:g} MB limit. Send fewer or smaller files."
    if isinstance(exc, CSRFError):
        return "The form had expired or did not come from this site. Reload the page and try again."
    if exc.code == 404:
        return "Nothing was found at this address."
    if exc.code == 405:
        return f"The method {request.method} is not allowed here."
    return exc.description or exc.name


def register(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return _respond(_http_message(exc), exc.code or 500)

    @app.errorhandler(InputError)
    def input_error(exc: InputError):
        return _respond(exc.message, exc.status)
