"""The signed-in user's own account: password change and personal API tokens."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for
from flask_login import current_user
from werkzeug.security import check_password_hash
from werkzeug.wrappers import Response

from webapp import audit
from webapp.account_forms import PasswordChangeForm, TokenForm
from webapp.accounts import begin_password_check, issue_token, set_password, sign_in
from webapp.db import ApiToken, db, utcnow
from webapp.views.auth import safe_next, throttled_message

bp = Blueprint("account", __name__, url_prefix="/account")


def _render(status: int = 200, *, password_form=None, token_form=None, new_token: str | None = None):
    return render_template(
        "account.html",
        password_form=password_form or PasswordChangeForm(formdata=None),
        token_form=token_form or TokenForm(formdata=None),
        new_token=new_token,
    ), status


NEW_TOKEN_KEY = "new_token"


@bp.get("")
def index() -> tuple[str, int]:
    # Shown once, on the page the creating POST redirects to: reloading it creates nothing.
    return _render(new_token=session.pop(NEW_TOKEN_KEY, None))


@bp.route("/password", methods=("GET", "POST"))
def password() -> Response | tuple[str, int]:
    """Change one's password; the only page open to a user who signed in with a one-time password."""
    form = PasswordChangeForm()
    throttled = False
    if form.validate_on_submit():
        user = current_user._get_current_object()
        # The current password is guessed like a sign-in (a borrowed, unlocked browser): counted and limited alike.
        attempt = begin_password_check(user.username, detail="current password on the password page")
        if attempt.wait is not None:
            form.current.errors.append(throttled_message(attempt.wait))
            throttled = True
        elif check_password_hash(user.password_hash, form.current.data):
            db.session.delete(attempt.event)  # not a sign-in: the change itself is recorded
            set_password(user, form.new.data)
            sign_in(user)  # the session follows the new session token; other browsers are signed out
            audit.record(audit.PASSWORD_CHANGED, target=f"user:{user.username}")
            db.session.commit()
            flash("Your password was changed.")
            return redirect(
                safe_next(request.args.get("next")) if request.args.get("next") else url_for("account.index")
            )
        else:
            form.current.errors.append("The current password is wrong.")
    status = 429 if throttled else 400 if form.errors else 200
    if current_user.must_change_password:
        return render_template("password.html", form=form), status
    return _render(status, password_form=form)


@bp.post("/tokens")
def create_token() -> Response | tuple[str, int]:
    """Create a token, then redirect (Post/Redirect/Get) to the page that shows it once. It travels in the
    session cookie for that one redirect: whoever holds this session can create tokens anyway."""
    form = TokenForm()
    if not form.validate_on_submit():
        return _render(400, token_form=form)
    token, row = issue_token(current_user, form.label.data)
    audit.record(audit.TOKEN_CREATED, target=f"token:{row.id}", detail=row.label)
    db.session.commit()
    session[NEW_TOKEN_KEY] = token
    return redirect(url_for("account.index"), 303)


@bp.post("/tokens/<int:token_id>/revoke")
def revoke_token(token_id: int) -> Response:
    row = db.get_or_404(ApiToken, token_id)
    if row.user_id != current_user.id:
        abort(404)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        audit.record(audit.TOKEN_REVOKED, target=f"token:{row.id}", detail=row.label)
        db.session.commit()
        flash(f"The token “{row.label}” was revoked.")
    return redirect(url_for("account.index"))
