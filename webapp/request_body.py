"""Every request body is read whole, before the app (and so any database work) sees the request, and a
body that arrives too slowly is cut off.

gunicorn's gthread worker gives each request a thread until its body is read, and the app takes a
database connection for the signed-in user before the form is parsed. A client that trickles a body a
byte at a time would therefore hold a thread and a pooled connection for as long as it liked; a few
dozen of them starve the health check and sign-in. Here the body is read first, into a spooled temporary
file (memory up to SPOOL_BYTES, disk beyond), and once BODY_GRACE_SECONDS have passed it must keep up an
average of BODY_MIN_RATE bytes a second, else the socket's reading side is shut (gunicorn hands the
socket to the app as `gunicorn.socket`) and the request is answered 408 by the one error responder.
"""

from __future__ import annotations

import contextlib
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, abort, request
from werkzeug.wsgi import ClosingIterator

SPOOL_BYTES = 1024 * 1024
CHUNK = 64 * 1024
TOO_SLOW = "cxr.body_too_slow"


class BodyFirst:
    """WSGI middleware: the body is in `wsgi.input` (a spooled file) before the wrapped app runs."""

    def __init__(self, app: Flask, wsgi_app: Callable) -> None:
        self.app = app
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        declared = environ.get("CONTENT_LENGTH") or ""
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        limit = self.app.config["MAX_CONTENT_LENGTH"]
        # No body, or one Werkzeug refuses (413) from its declared length alone without reading it.
        if not chunked and (not declared.isdigit() or int(declared) == 0 or (limit and int(declared) > limit)):
            return self.wsgi_app(environ, start_response)
        body = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (closed with the response)
        # A chunked body is read to one byte past the limit, so that Werkzeug sees it is too large.
        completed = self._read(environ, body, (limit or 1 << 62) + 1 if chunked else int(declared))
        body.seek(0)
        environ["wsgi.input"] = body
        if completed is None:
            environ[TOO_SLOW] = True
        elif chunked:
            environ["CONTENT_LENGTH"] = str(completed)  # Werkzeug then applies MAX_CONTENT_LENGTH to it
            environ.pop("HTTP_TRANSFER_ENCODING", None)
            environ["wsgi.input_terminated"] = False
        return ClosingIterator(self.wsgi_app(environ, start_response), body.close)

    def _read(self, environ: dict[str, Any], body, most: int) -> int | None:
        """Copy up to `most` bytes of wsgi.input into `body`: the count copied, or None when the client was
        cut off for sending too slowly."""
        source = environ["wsgi.input"]
        client = environ.get("gunicorn.socket")
        config = self.app.config
        grace, rate = float(config["BODY_GRACE_SECONDS"]), float(config["BODY_MIN_RATE"])
        received = [0]
        done, cut = threading.Event(), threading.Event()

        def watch() -> None:
            started = time.monotonic()
            while not done.wait(0.5):
                elapsed = time.monotonic() - started
                if elapsed > grace and received[0] < rate * (elapsed - grace):
                    cut.set()
                    with contextlib.suppress(OSError):
                        client.shutdown(socket.SHUT_RD)  # the blocked read returns: the thread is free
                    return

        watchdog = threading.Thread(target=watch, daemon=True) if client is not None else None
        if watchdog is not None:
            watchdog.start()
        try:
            while received[0] < most:
                chunk = source.read(min(CHUNK, most - received[0]))
                if not chunk:
                    break
                body.write(chunk)
                received[0] += len(chunk)
        except Exception:  # OSError, or gunicorn's NoMoreData: expected once the client was cut off
            if not cut.is_set():
                raise
        finally:
            done.set()
        return None if cut.is_set() else received[0]


def refuse_slow_bodies() -> None:
    """before_request: the body was cut off for arriving too slowly (see BodyFirst)."""
    if request.environ.get(TOO_SLOW):
        abort(408, "The request arrived too slowly and was cut off. Check the network connection and send it again.")


def init_app(app: Flask) -> None:
    """Before any other before_request function (the user's session is loaded from the database)."""
    app.wsgi_app = BodyFirst(app, app.wsgi_app)
    app.before_request(refuse_slow_bodies)
