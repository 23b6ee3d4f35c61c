"""Accounts and access control: server-side sessions for people (Flask-Login), hashed bearer tokens for
scripts, sign-in throttling, and the rule that every route except sign-in and /healthz needs a user."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import wraps
from typing import Any

from flask import Flask, Request, abort, current_app, g, redirect, request, session, url_for
from flask_login import LoginManager, current_user, login_user, logout_user
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import joinedload
from werkzeug.security import check_password_hash, generate_password_hash

from webapp import audit
from webapp.db import ROLES, ApiToken, AuditEvent, User, UserSession, commit_in_turn, db, utcnow
from webapp.security import csrf

login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Sign in to continue."
login_manager.login_message_category = "info"  # guidance, not a confirmation that something was done
login_manager.session_protection = "basic"

# Routes anyone may reach: the sign-in page, the load balancer's health check and the static files.
PUBLIC_ENDPOINTS = {"auth.login", "health.healthz", "static"}
# What a user with a one-time password may do before choosing their own.
PASSWORD_CHANGE_ENDPOINTS = {"account.password", "auth.logout", "static"}
# Bearer tokens open the API and the image files that its answers link to.
TOKEN_ENDPOINTS = {"results.image_file"}
TOKEN_PREFIX = "cxr_"
SESSION_KEY = "sid"  # the cookie's random session id; the database keeps its digest (UserSession)
MIN_PASSWORD_LENGTH = 10
PASSWORD_ATTEMPTS_LOCK = 0x5349474E  # "SIGN": the advisory lock that orders password attempts (commit_in_turn)


class AccountError(ValueError):
    """A user-management request that cannot be carried out; the message says why."""


def normalise(username: str) -> str:
    return (username or "").strip().lower()


def hash_password(password: str, app: Flask | None = None) -> str:
    """scrypt by default; PASSWORD_HASH_METHOD lets the tests use a cheap one."""
    return generate_password_hash(password, method=(app or current_app).config["PASSWORD_HASH_METHOD"])


def check_new_password(password: str) -> None:
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise AccountError(f"The password must have at least {MIN_PASSWORD_LENGTH} characters.")


def one_time_password() -> str:
    return secrets.token_urlsafe(12)


def find_user(username: str) -> User | None:
    return db.session.scalar(select(User).where(User.username == normalise(username)))


def create_user(username: str, password: str, role: str, *, must_change_password: bool = False) -> User:
    """Add a user (not yet committed). Names are ASCII letters, digits and . _ -, compared without case:
    other scripts hold letters that look like these ("аdmin" with a Cyrillic "а")."""
    name = normalise(username)
    if not name or len(name) > 64 or not all(c.isascii() and (c.isalnum() or c in "._-") for c in name):
        raise AccountError("A user name has 1–64 letters (a–z), digits, dots, dashes or underscores.")
    if role not in ROLES:
        raise AccountError(f"The role must be one of: {', '.join(ROLES)}.")
    if find_user(name) is not None:
        raise AccountError(f"The user '{name}' exists already.")
    check_new_password(password)
    user = User(
        username=name,
        password_hash=hash_password(password),
        role=role,
        active=True,
        must_change_password=must_change_password,
        session_token=secrets.token_hex(32),
    )
    db.session.add(user)
    db.session.flush()
    return user


def set_password(user: User, password: str, *, one_time: bool = False) -> None:
    """Replace the password, sign the user out everywhere else (a new session token) and revoke every
    API token of theirs: whoever knew the old password may have made one."""
    check_new_password(password)
    user.password_hash = hash_password(password)
    user.must_change_password = one_time
    user.session_token = secrets.token_hex(32)
    revoke_tokens(user)


def revoke_tokens(user: User) -> None:
    """Revoke every API token of `user` (not committed): for good, whatever happens to the account later."""
    if user.id is not None:
        db.session.execute(
            update(ApiToken)
            .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )


def set_active(user: User, active: bool) -> None:
    """Enable or disable `user`. Disabling ends their open sessions and revokes their API tokens, so that
    enabling the account again brings none of them back."""
    user.active = active
    user.session_token = secrets.token_hex(32)  # a disabled user's open sessions end now
    if not active:
        revoke_tokens(user)


def issue_token(user: User, label: str) -> tuple[str, ApiToken]:
    """Create an API token for `user` (flushed, not committed): the token itself is returned only here."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user=user, digest=token_digest(token), prefix=token[:12], label=(label or "").strip()[:64] or "API")
    db.session.add(row)
    db.session.flush()
    return token, row


def token_digest(token: str) -> str:
    # A fast hash suffices: tokens carry 256 random bits, so there is nothing to guess from the digest.
    return hashlib.sha256(token.encode()).hexdigest()


def verify_password(username: str, password: str) -> User | None:
    """The active user with this name and password, else None (timing does not reveal which was wrong)."""
    user = find_user(username)
    if user is None:
        check_password_hash(current_app.config["DUMMY_PASSWORD_HASH"], password or "")
        return None
    if not check_password_hash(user.password_hash, password or ""):
        return None
    return user


@dataclass(frozen=True)
class Attempt:
    """A password check that has been counted: `event` is its audit entry (a failure until it succeeds)."""

    event: AuditEvent
    wait: timedelta | None  # refused for this long; None: check the password


def begin_password_check(username: str, detail: str | None = None) -> Attempt:
    """Count a password attempt before the password is checked, and say whether it may be checked.

    The attempt is committed as a failure first, so concurrent attempts see each other (counting after
    the slow password hash let dozens through at once); `succeeded` turns it into a success. Limits, over
    SIGN_IN_WINDOW_SECONDS, counted from the audit table so that every worker and host sees them:
    * SIGN_IN_LIMIT_PER_ACCOUNT failures for one account from one address: that address is refused for
      that account. A stranger elsewhere cannot lock the account for its owner;
    * SIGN_IN_LIMIT_PER_ADDRESS failures from one address, whatever the account: the address is refused;
    * past SIGN_IN_LIMIT_PER_ACCOUNT failures for an account from all addresses together, the account takes
      one attempt per back-off (SIGN_IN_BACKOFF_SECONDS, doubling per further failure, at most
      SIGN_IN_BACKOFF_MAX_SECONDS) after its latest failure; an attempt sooner is refused at once (429 with
      Retry-After), never held in a sleeping request thread: guessing from many addresses is slowed, and the
      owner is only asked to wait seconds, never locked out.
    A refused attempt is recorded as throttled, not as a failure, so it lengthens no limit."""
    config = current_app.config
    name, address = normalise(username), request.remote_addr
    # Counting the failures up to this attempt's id must count every attempt committed before it.
    commit_in_turn(PASSWORD_ATTEMPTS_LOCK)
    event = audit.record(audit.SIGN_IN_FAILED, username=name, detail=detail)
    db.session.commit()
    window = timedelta(seconds=int(config["SIGN_IN_WINDOW_SECONDS"]))
    since = utcnow() - window
    failures = select(func.count(), func.min(AuditEvent.created_at)).where(
        AuditEvent.action == audit.SIGN_IN_FAILED, AuditEvent.created_at >= since, AuditEvent.id <= event.id
    )
    limits = (
        ((AuditEvent.username == name) & (AuditEvent.address == address), int(config["SIGN_IN_LIMIT_PER_ACCOUNT"])),
        (AuditEvent.address == address, int(config["SIGN_IN_LIMIT_PER_ADDRESS"])),
    )
    for condition, limit in limits:
        count, oldest = db.session.execute(failures.where(condition)).one()
        if count > limit:  # this attempt is one of them
            return _throttled(event, max(timedelta(seconds=1), oldest + window - utcnow()))
    everywhere = db.session.execute(failures.where(AuditEvent.username == name)).one()[0]
    excess = everywhere - int(config["SIGN_IN_LIMIT_PER_ACCOUNT"])
    if excess > 0:
        backoff = timedelta(
            seconds=min(
                float(config["SIGN_IN_BACKOFF_MAX_SECONDS"]),
                float(config["SIGN_IN_BACKOFF_SECONDS"]) * 2 ** min(excess - 1, 16),
            )
        )
        latest = db.session.scalar(
            select(func.max(AuditEvent.created_at)).where(
                AuditEvent.action == audit.SIGN_IN_FAILED, AuditEvent.username == name, AuditEvent.id < event.id
            )
        )
        if latest is not None and utcnow() - latest < backoff:
            return _throttled(event, backoff - (utcnow() - latest))
    return Attempt(event, None)


def _throttled(event: AuditEvent, wait: timedelta) -> Attempt:
    event.action = audit.SIGN_IN_THROTTLED
    db.session.commit()
    return Attempt(event, wait)


def succeeded(attempt: Attempt, user: User) -> None:
    """The password was right: the attempt's audit entry becomes a sign-in (not committed)."""
    attempt.event.action = audit.SIGN_IN
    attempt.event.user_id = user.id


def sign_in(user: User) -> None:
    """Start a new server-side session for `user` (not committed). Whatever the cookie held before is
    dropped, so a session id planted before sign-in is never the signed-in one (session fixation), and the
    session ends PERMANENT_SESSION_LIFETIME after now however active it is."""
    end_session()
    session.clear()
    sid = secrets.token_urlsafe(32)
    now = utcnow()
    lifetime = current_app.permanent_session_lifetime
    db.session.add(
        UserSession(
            digest=token_digest(sid), user=user, created_at=now, expires_at=now + lifetime, address=request.remote_addr
        )
    )
    # Expired and ended sessions of this user are kept for a day (for the audit of what happened), then dropped.
    db.session.execute(
        UserSession.__table__.delete().where(
            UserSession.user_id == user.id, UserSession.expires_at < now - timedelta(days=1)
        )
    )
    login_user(user, remember=False)
    session[SESSION_KEY] = sid
    session.permanent = True  # the cookie's own expiry; the server-side end above is what counts
    user.last_sign_in_at = now


def end_session() -> None:
    """End this browser's server-side session, if any (not committed), and sign it out."""
    sid = session.get(SESSION_KEY)
    if sid:
        db.session.execute(
            update(UserSession)
            .where(UserSession.digest == token_digest(sid), UserSession.ended_at.is_(None))
            .values(ended_at=utcnow(), reference_offers=None)
        )
    if current_user.is_authenticated and "api_token" not in g:
        logout_user()
    session.pop(SESSION_KEY, None)


@login_manager.user_loader
def load_user(session_token: str) -> User | None:
    """The user of this browser's session: its server-side row must exist, be neither ended nor past its
    absolute end, and belong to an active user whose session token is still the one signed in with (a
    password change, reset or disabling replaces it, which ends every session of theirs)."""
    sid = session.get(SESSION_KEY)
    if not sid:
        return None
    row = db.session.scalar(select(UserSession).where(UserSession.digest == token_digest(sid)))
    if row is None or row.ended_at is not None or row.expires_at <= utcnow():
        return None
    user = row.user
    if not user.active or user.session_token != session_token:
        return None
    g.user_session = row
    return user


def current_session() -> UserSession | None:
    """The server-side session of this request's signed-in browser; None for API tokens and anonymous
    requests. Valid once `current_user` has been loaded (`require_user` does it for every route)."""
    return None if "api_token" in g else g.get("user_session")


@login_manager.request_loader
def bearer_user(request: Request) -> User | None:
    """The user of a valid `Authorization: Bearer` token on an API route (for this request only: no
    session is created). A bad token makes the request anonymous and leaves its reason in
    `g.token_problem`, which `require_user` answers with 401: aborting here, inside Flask-Login's
    loader, would abort again when the error page itself asks for the user (a bare 500)."""
    header = request.headers.get("Authorization", "")
    if not header or not (request.blueprint == "api" or request.endpoint in TOKEN_ENDPOINTS):
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        g.token_problem = "Send the API token as 'Authorization: Bearer <token>'."
        return None
    # The user in the same query: one database round trip per API request, not two.
    row = db.session.scalar(
        select(ApiToken).options(joinedload(ApiToken.user)).where(ApiToken.digest == token_digest(token.strip()))
    )
    if row is None or row.revoked_at is not None or not row.user.active:
        g.token_problem = "The API token is not valid: it is unknown, revoked, or its user is disabled."
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):  # not a write per request
        row.last_used_at = now
        try:
            db.session.commit()
        except SQLAlchemyError:  # bookkeeping only: a busy database must not refuse the request itself
            db.session.rollback()
            current_app.logger.warning("Could not record the last use of API token %s", row.id, exc_info=True)
    g.api_token = row
    return row.user


def require_user() -> Any:
    """before_request: refuse anonymous access; the user comes from a bearer token or the session."""
    if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None:
        return None  # unknown URLs fall through to 404
    if not current_user.is_authenticated:
        if "token_problem" in g:
            abort(401, g.token_problem)
        if request.blueprint == "api":
            abort(401, "Sign in, or send an API token as 'Authorization: Bearer <token>'.")
        return login_manager.unauthorized()
    if request.blueprint == "api" and "api_token" not in g and current_app.config["WTF_CSRF_ENABLED"]:
        csrf.protect()  # the API is CSRF-exempt for tokens only: a browser session needs the form token
    if current_user.must_change_password and "api_token" not in g and request.endpoint not in PASSWORD_CHANGE_ENDPOINTS:
        # Where the user was going (a link to a prediction) is kept for after the change.
        return redirect(
            url_for("account.password", next=request.full_path.rstrip("?") if request.method == "GET" else None)
        )
    return None


def admin_required(view: Callable) -> Callable:
    @wraps(view)
    def wrapper(*args, **kwargs):
        if not current_user.is_admin:
            abort(403, "Only administrators may open this page.")
        return view(*args, **kwargs)

    return wrapper


def ensure_first_admin(app: Flask) -> None:
    """With no users at all, create `admin` with a one-time password (CXR_ADMIN_PASSWORD, or generated
    and printed) so that a fresh install can be signed in to. Runs under the schema lock."""
    with app.app_context():
        if db.session.scalar(select(func.count()).select_from(User)):
            return
        given = app.config.get("ADMIN_PASSWORD")
        password = given or one_time_password()
        try:
            create_user("admin", password, "admin", must_change_password=not given)
            audit.record(audit.USER_CREATED, target="user:admin", detail="first administrator, at start-up")
            db.session.commit()
        except IntegrityError:  # another worker or host created it first
            db.session.rollback()
            return
    if not given:
        banner = "=" * 72
        message = (
            f"\n{banner}\nNo users existed, so an administrator was created.\n"
            f"  user name: admin\n  one-time password: {password}\n"
            f"Sign in and choose a new password. (Set CXR_ADMIN_PASSWORD to choose it yourself.)\n{banner}\n"
        )
        print(message, flush=True)
    app.logger.warning("Created the first administrator 'admin'%s.", "" if given else " (one-time password printed)")


def init_app(app: Flask) -> None:
    # Checked against unknown user names, so that a wrong name takes as long as a wrong password.
    app.config.setdefault("DUMMY_PASSWORD_HASH", hash_password(secrets.token_hex(16), app))
    login_manager.init_app(app)
    app.before_request(require_user)
