"""Sign-in and sign-out."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from webapp import audit
from webapp.account_forms import SignInForm
from webapp.accounts import begin_password_check, end_session, sign_in, succeeded, verify_password
from webapp.db import db

bp = Blueprint("auth", __name__)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site only (no open redirect), and no control
    characters (a CR/LF would split the Location header)."""
    if target and any(ord(c) < 32 or ord(c) == 127 for c in target):
        return url_for("upload.index")
    parts = urlsplit(target or "")
    # Browsers read "/\host" as "//host": a backslash anywhere is refused.
    if (
        target
        and not parts.scheme
        and not parts.netloc
        and target.startswith("/")
        and "\\" not in target
        and not target.startswith("//")
    ):
        return target
    return url_for("upload.index")


def throttled_message(wait: timedelta) -> str:
    seconds = retry_after(wait)
    if seconds < 60:
        return f"Too many failed attempts. Try again in {seconds} second{'s' if seconds > 1 else ''}."
    minutes = round(seconds / 60)
    return f"Too many failed attempts. Try again in {minutes} minute{'s' if minutes > 1 else ''}."


def retry_after(wait: timedelta) -> int:
    """Whole seconds for Retry-After: never 0, and never earlier than the wait ends."""
    return int(wait.total_seconds()) + 1


@bp.route("/login", methods=("GET", "POST"))
def login() -> Response | str | tuple[str, int]:
    if current_user.is_authenticated:
        return redirect(safe_next(request.args.get("next")))
    form = SignInForm()
    if not form.validate_on_submit():
        return render_template("login.html", form=form), 400 if form.errors else 200
    attempt = begin_password_check(form.username.data)
    if attempt.wait is not None:
        return (
            render_template("login.html", form=form, error=throttled_message(attempt.wait)),
            429,
            {"Retry-After": str(retry_after(attempt.wait))},
        )
    user = verify_password(form.username.data, form.password.data)
    if user is None or not user.active:
        if user is not None:
            attempt.event.detail = "account disabled"
            db.session.commit()
        error = "This account is disabled. Ask an administrator." if user else "The user name or password is wrong."
        return render_template("login.html", form=form, error=error), 401
    sign_in(user)
    succeeded(attempt, user)
    db.session.commit()
    return redirect(safe_next(request.args.get("next")))


@bp.post("/logout")
def logout() -> Response:
    """Sign-out is a POST with the CSRF token (checked by CSRFProtect), so other sites cannot trigger it."""
    audit.record(audit.SIGN_OUT)
    end_session()  # a copy of the cookie is worthless from now on
    db.session.commit()
    flash("You are signed out.")
    return redirect(url_for("auth.login"))
