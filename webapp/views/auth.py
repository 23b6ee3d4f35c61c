"""Sign-in and sign-out."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, logout_user
from werkzeug.wrappers import Response

from webapp import audit
from webapp.account_forms import SignInForm
from webapp.accounts import normalise, sign_in, throttled, verify_password
from webapp.db import db

bp = Blueprint("auth", __name__)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site only (no open redirect), and no control
    characters (a CR/LF would split the Location header)."""
    if target and any(ord(c) < 32 or ord(c) == 127 for c in target):
        return url_for("upload.index")
    parts = urlsplit(target or "")
    # Browsers read "/\host" as "//host": a backslash anywhere is refused.
    if target and not parts.scheme and not parts.netloc and target.startswith("/") and "\\" not in target \
            and not target.startswith("//"):
        return target
    return url_for("upload.index")


@bp.route("/login", methods=("GET", "POST"))
def login() -> Response | str | tuple[str, int]:
    if current_user.is_authenticated:
        return redirect(safe_next(request.args.get("next")))
    form = SignInForm()
    if not form.validate_on_submit():
        return render_template("login.html", form=form), 400 if form.errors else 200
    name = normalise(form.username.data)
    wait = throttled(name, request.remote_addr)
    if wait is not None:
        audit.record(audit.SIGN_IN_THROTTLED, username=name)
        db.session.commit()
        minutes = max(1, round(wait.total_seconds() / 60))
        message = f"Too many failed sign-ins. Try again in {minutes} minute{'s' if minutes > 1 else ''}."
        return render_template("login.html", form=form, error=message), 429, {"Retry-After": str(int(wait.total_seconds()) + 1)}
    user = verify_password(name, form.password.data)
    if user is None or not user.active:
        audit.record(audit.SIGN_IN_FAILED, username=name, detail="account disabled" if user else None)
        db.session.commit()
        error = ("This account is disabled. Ask an administrator." if user
                 else "The user name or password is wrong.")
        return render_template("login.html", form=form, error=error), 401
    sign_in(user)
    audit.record(audit.SIGN_IN, user=user)
    db.session.commit()
    return redirect(safe_next(request.args.get("next")))


@bp.post("/logout")
def logout() -> Response:
    """Sign-out is a POST with the CSRF token (checked by CSRFProtect), so other sites cannot trigger it."""
    audit.record(audit.SIGN_OUT)
    db.session.commit()
    logout_user()
    flash("You are signed out.")
    return redirect(url_for("auth.login"))
