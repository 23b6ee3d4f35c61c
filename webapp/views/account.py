"""The signed-in user's own account: password change and personal API tokens."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_login import current_user
from werkzeug.security import check_password_hash
from werkzeug.wrappers import Response

from webapp import audit
from webapp.account_forms import PasswordChangeForm, TokenForm
from webapp.accounts import issue_token, set_password, sign_in
from webapp.db import ApiToken, db, utcnow

bp = Blueprint("account", __name__, url_prefix="/account")


def _render(status: int = 200, *, password_form=None, token_form=None, new_token: str | None = None):
    return render_template(
        "account.html",
        password_form=password_form or PasswordChangeForm(formdata=None),
        token_form=token_form or TokenForm(formdata=None),
        new_token=new_token,
    ), status


@bp.get("")
def index() -> tuple[str, int]:
    return _render()


@bp.route("/password", methods=("GET", "POST"))
def password() -> Response | tuple[str, int]:
    """Change one's password; the only page open to a user who signed in with a one-time password."""
    form = PasswordChangeForm()
    if form.validate_on_submit():
        user = current_user._get_current_object()
        if check_password_hash(user.password_hash, form.current.data):
            set_password(user, form.new.data)
            sign_in(user)  # the session follows the new session token; other browsers are signed out
            audit.record(audit.PASSWORD_CHANGED, target=f"user:{user.username}")
            db.session.commit()
            flash("Your password was changed.")
            return redirect(url_for("account.index"))
        form.current.errors.append("The current password is wrong.")
    status = 400 if form.errors else 200
    if current_user.must_change_password:
        return render_template("password.html", form=form), status
    return _render(status, password_form=form)


@bp.post("/tokens")
def create_token() -> tuple[str, int]:
    form = TokenForm()
    if not form.validate_on_submit():
        return _render(400, token_form=form)
    token, row = issue_token(current_user, form.label.data)
    audit.record(audit.TOKEN_CREATED, target=f"token:{row.id}", detail=row.label)
    db.session.commit()
    return _render(201, new_token=token)


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
