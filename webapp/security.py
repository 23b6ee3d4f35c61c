"""HTTP hardening: CSRF protection, security headers on every response, session cookies that are
Secure whenever the request came over HTTPS, and trust in a reverse proxy's forwarding headers only
when configured."""

from __future__ import annotations

from flask import Flask, request
from flask.sessions import SecureCookieSessionInterface
from flask_wtf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers import Response

csrf = CSRFProtect()

# Only this site's own files: no inline scripts or styles (app.js is a file), no framing by other sites.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}


# Pages, the API's answers, the history's CSV export and the PDF report. Films and thumbnails are cached by
# the browser only (private, see webapp/views/results.py), so that the history's list does not fetch them again.
NO_STORE_TYPES = {"text/html", "application/json", "text/csv", "application/pdf"}


class HttpsAwareSessionInterface(SecureCookieSessionInterface):
    """The session cookie gets the Secure flag on HTTPS requests even when SESSION_COOKIE_SECURE is off,
    so that one configuration serves both `make run` on plain loopback HTTP and a TLS proxy."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure


def add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    if response.mimetype in NO_STORE_TYPES:
        # Patient data: never kept by shared caches or left in a browser's disk cache.
        response.cache_control.no_store = True
    return response


def init_app(app: Flask) -> None:
    hops = int(app.config["TRUSTED_PROXIES"])
    if hops:  # X-Forwarded-For/-Proto/-Host from that many proxies; otherwise they are ignored (spoofable)
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    app.session_interface = HttpsAwareSessionInterface()
    csrf.init_app(app)
    app.after_request(add_security_headers)
