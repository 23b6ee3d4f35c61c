"""Administration: user accounts (add, disable, enable, reset password), the audit log and the site check."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for
from flask_login import current_user
from sqlalchemy import select
from werkzeug.wrappers import Response

from webapp import audit, site_check
from webapp.account_forms import AuditFilter, NewUserForm, SiteCheckForm
from webapp.accounts import AccountError, admin_required, create_user, one_time_password, set_active, set_password
from webapp.db import SiteCheck, User, db
from webapp.model_service import model_service
from webapp.queries import paginate

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.before_request
@admin_required
def only_admins() -> None:
    """Every page here is for administrators (signed-in users are checked first, in webapp.accounts)."""


# A one-time password travels in the administrator's session cookie for one redirect only (Post/Redirect/Get:
# reloading the page must not issue another); that session may reset any password anyway.
ISSUED_KEY = "issued_password"


def _users_page(form: NewUserForm | None = None, status: int = 200):
    users = db.session.scalars(select(User).order_by(User.username)).all()
    return render_template(
        "admin_users.html", users=users, form=form or NewUserForm(formdata=None), issued=session.pop(ISSUED_KEY, None)
    ), status


def _issued(username: str, password: str) -> Response:
    session[ISSUED_KEY] = (username, password)
    return redirect(url_for("admin.users"), 303)


@bp.get("/users")
def users() -> tuple[str, int]:
    return _users_page()


@bp.post("/users")
def add_user() -> Response | tuple[str, int]:
    form = NewUserForm()
    if not form.validate_on_submit():
        return _users_page(form, 400)
    password = one_time_password()
    try:
        user = create_user(form.username.data, password, form.role.data, must_change_password=True)
    except AccountError as exc:
        db.session.rollback()
        form.username.errors.append(str(exc))
        return _users_page(form, 400)
    audit.record(audit.USER_CREATED, target=f"user:{user.username}", detail=f"role {user.role}")
    db.session.commit()
    return _issued(user.username, password)


def _target(user_id: int) -> User:
    user = db.get_or_404(User, user_id)
    if user.id == current_user.id:
        abort(400, "Use your account page for your own account; another administrator can disable or reset it.")
    return user


@bp.get("/users/<int:user_id>/<any(disable, reset):change>")
def confirm(user_id: int, change: str) -> str:
    """Disabling and resetting end the user's sessions and tokens: the list links here to confirm first."""
    return render_template("admin_confirm.html", user=_target(user_id), change=change)


@bp.post("/users/<int:user_id>/<any(disable, enable):change>")
def set_state(user_id: int, change: str) -> Response:
    user = _target(user_id)
    active = change == "enable"
    set_active(user, active)
    audit.record(audit.USER_ENABLED if active else audit.USER_DISABLED, target=f"user:{user.username}")
    db.session.commit()
    flash(
        f"{user.username} may sign in again."
        if active
        else f"{user.username} is disabled: signed out everywhere, and their API tokens stop working."
    )
    return redirect(url_for("admin.users"))


@bp.post("/users/<int:user_id>/reset")
def reset(user_id: int) -> Response:
    user = _target(user_id)
    password = one_time_password()
    set_password(user, password, one_time=True)
    audit.record(audit.PASSWORD_RESET, target=f"user:{user.username}")
    db.session.commit()
    return _issued(user.username, password)


@bp.get("/audit")
def audit_log() -> tuple[str, int]:
    filters = AuditFilter(request.args)
    if not filters.validate():
        return render_template("admin_audit.html", filters=filters, page=None), 400
    data = filters.data
    page = paginate(audit.filtered(data["user"], data["action"], data["date_from"], data["date_to"], data["address"]))
    return render_template("admin_audit.html", filters=filters, page=page), 200


def _site_checks_page(form: SiteCheckForm | None = None, status: int = 200) -> tuple[str, int]:
    checks = db.session.scalars(select(SiteCheck).order_by(SiteCheck.created_at.desc(), SiteCheck.id.desc())).all()
    return render_template(
        "admin_site_check.html", form=form or SiteCheckForm(formdata=None), checks=checks, check=None
    ), status


@bp.get("/site-check")
def site_checks() -> tuple[str, int]:
    return _site_checks_page()


@bp.post("/site-check")
def run_site_check() -> Response | tuple[str, int]:
    form = SiteCheckForm()
    if not form.validate_on_submit():
        return _site_checks_page(form, 400)
    # One film is read at a time; the request body's size is bounded by MAX_CONTENT_LENGTH.
    films = ((upload.filename, upload.read()) for upload in form.files.data)
    row = site_check.run_site_check(films, form.label.data, current_user._get_current_object())
    return redirect(url_for("admin.site_check_detail", check_id=row.id), 303)


@bp.get("/site-check/<int:check_id>")
def site_check_detail(check_id: int) -> str:
    row = db.get_or_404(SiteCheck, check_id)
    card = model_service.bundle.card
    return render_template(
        "admin_site_check.html",
        check=row,
        comparison=site_check.compare(row, card),
        bins=site_check.HISTOGRAM_BINS,
        card_version=card.get("version"),
    )
