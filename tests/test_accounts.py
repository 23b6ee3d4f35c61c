"""Accounts: sign-in and sign-out, roles, API tokens, user management, the first administrator, the
CLI, throttling and the audit trail."""

from __future__ import annotations

import io
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from tests.accounts import PASSWORD, add_user, clinician_client, signed_in, token_for
from webapp.db import AuditEvent, Prediction, User, db
from webapp.startup import prepare_database

# The same tests on PostgreSQL (the several-hosts deployment) as on SQLite: see `databases` in tests/conftest.py.
pytestmark = pytest.mark.databases("sqlite", "postgres")


def events(app, action: str | None = None) -> list[AuditEvent]:
    with app.app_context():
        query = select(AuditEvent).order_by(AuditEvent.id)
        if action:
            query = query.where(AuditEvent.action == action)
        rows = db.session.scalars(query).all()
        db.session.expunge_all()
        return rows


def user_row(app, name: str) -> User:
    with app.app_context():
        user = db.session.scalar(select(User).where(User.username == name))
        db.session.expunge_all()
        return user


def post_upload(client, data: bytes, headers: dict | None = None, **fields):
    return client.post(
        "/api/v1/predictions", data={"file": (io.BytesIO(data), "chest.png"), **fields}, headers=headers or {}
    )


# -- sign-in ------------------------------------------------------------------------------------------


def test_sign_in_and_out(app, anon):
    add_user(app, "alice")
    page = anon.get("/history")
    assert page.status_code == 302 and page.location.startswith("/login?next=")
    assert anon.post("/login", data={"username": "Alice ", "password": PASSWORD}).status_code == 302  # any case
    assert anon.get("/history").status_code == 200
    assert anon.post("/logout").status_code == 302
    assert anon.get("/history").status_code == 302
    assert [e.action for e in events(app) if e.username == "alice"] == ["sign_in", "list", "sign_out"]


def session_cookie(client) -> str:
    return client.get_cookie("session").value


def test_sign_out_ends_the_session_on_the_server(app, anon):
    """A copy of the session cookie (a shared computer, a stolen cookie) is worthless after sign-out."""
    add_user(app, "alice")
    anon.post("/login", data={"username": "alice", "password": PASSWORD})
    thief = app.test_client()
    thief.set_cookie("session", session_cookie(anon))
    assert thief.get("/account").status_code == 200
    assert anon.post("/logout").status_code == 302
    for path in ("/account", "/history"):
        response = thief.get(path)
        assert response.status_code == 302 and response.location.startswith("/login"), path
    assert thief.get("/api/v1/predictions").status_code == 401


def test_sign_in_starts_a_new_session(app, anon):
    """Whatever the browser's session held before sign-in (a planted id: session fixation) is dropped."""
    add_user(app, "alice")
    with anon.session_transaction() as before:
        before["sid"] = "planted-by-an-attacker"
        before["_user_id"] = "whatever"
    assert anon.post("/login", data={"username": "alice", "password": PASSWORD}).status_code == 302
    with anon.session_transaction() as first:
        first_id = first["sid"]
    assert first_id != "planted-by-an-attacker"
    anon.post("/logout")
    anon.post("/login", data={"username": "alice", "password": PASSWORD})
    with anon.session_transaction() as second:
        assert second["sid"] != first_id


def test_a_session_ends_at_its_absolute_lifetime_however_active(app, anon):
    from webapp.db import UserSession

    add_user(app, "alice")
    anon.post("/login", data={"username": "alice", "password": PASSWORD})
    assert anon.get("/account").status_code == 200  # in use: the cookie is refreshed, the end is not
    with app.app_context():
        row = db.session.scalar(select(UserSession))
        assert row.expires_at - row.created_at == app.permanent_session_lifetime
        row.expires_at = row.created_at  # the end of the shift
        db.session.commit()
    response = anon.get("/account")
    assert response.status_code == 302 and response.location.startswith("/login")


def test_wrong_password_is_refused_and_recorded(app, anon):
    add_user(app, "alice")
    wrong = anon.post("/login", data={"username": "alice", "password": "not the password"})
    assert wrong.status_code == 401 and "wrong" in wrong.get_data(as_text=True)
    unknown = anon.post("/login", data={"username": "nobody", "password": "whatever"})
    assert unknown.status_code == 401 and "wrong" in unknown.get_data(as_text=True)
    failed = events(app, "sign_in_failed")
    assert [e.username for e in failed] == ["alice", "nobody"]
    assert all(e.address == "127.0.0.1" for e in failed)


def test_empty_sign_in_form_names_the_fields(anon):
    response = anon.post("/login", data={})
    assert response.status_code == 400
    assert "Enter your user name." in response.get_data(as_text=True)


def test_next_goes_back_to_the_page_but_never_off_site(app):
    add_user(app, "alice")
    for target, expected in (
        ("/history?class=covid", "/history?class=covid"),
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
    ):
        client = app.test_client()
        response = client.post(f"/login?next={target}", data={"username": "alice", "password": PASSWORD})
        assert response.status_code == 302 and response.location == expected, target


def test_session_cookie_flags(app, anon):
    add_user(app, "alice")
    response = anon.post("/login", data={"username": "alice", "password": PASSWORD})
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Expires=" in cookie
    assert "Secure" not in cookie  # plain HTTP (make run on loopback)


def test_session_cookie_is_secure_behind_a_tls_proxy(make_app):
    app = make_app(TRUSTED_PROXIES=1)
    add_user(app, "alice")
    response = app.test_client().post(
        "/login",
        data={"username": "alice", "password": PASSWORD},
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "10.1.2.3"},
    )
    assert "Secure" in response.headers["Set-Cookie"]
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    assert events(app, "sign_in")[-1].address == "10.1.2.3"


def test_forwarded_headers_are_ignored_without_a_trusted_proxy(app, anon):
    add_user(app, "alice")
    anon.post(
        "/login", data={"username": "alice", "password": "wrong password"}, headers={"X-Forwarded-For": "10.9.9.9"}
    )
    assert events(app, "sign_in_failed")[-1].address == "127.0.0.1"


# -- throttling ---------------------------------------------------------------------------------------


def test_failed_sign_ins_are_throttled_per_account_and_address(make_app):
    app = make_app(SIGN_IN_LIMIT_PER_ACCOUNT=3)
    add_user(app, "alice")
    client = app.test_client()
    for _ in range(3):
        assert client.post("/login", data={"username": "alice", "password": "guess guess"}).status_code == 401
    refused = client.post("/login", data={"username": "alice", "password": PASSWORD})  # even the right one
    assert refused.status_code == 429 and "Too many failed attempts" in refused.get_data(as_text=True)
    assert int(refused.headers["Retry-After"]) > 0
    assert events(app, "sign_in_throttled")[-1].username == "alice"
    add_user(app, "bob")
    assert client.post("/login", data={"username": "bob", "password": PASSWORD}).status_code == 302


def test_a_stranger_cannot_lock_an_account_only_slow_it(make_app, monkeypatch):
    """Failures from one address do not lock the account for its owner elsewhere; failures from many
    addresses make the account take one attempt per back-off: sooner, 429 with Retry-After at once (no
    request thread sleeps), and after the back-off the right password still gets in."""
    app = make_app(SIGN_IN_LIMIT_PER_ACCOUNT=3, SIGN_IN_BACKOFF_SECONDS=2.0, SIGN_IN_BACKOFF_MAX_SECONDS=8.0)
    monkeypatch.setattr("time.sleep", lambda seconds: pytest.fail(f"a request thread slept {seconds} s"))
    add_user(app, "admin-alice", "admin")
    for n in range(6):  # a guesser rotating addresses
        stranger = app.test_client()
        guess = stranger.post(
            "/login",
            data={"username": "admin-alice", "password": "guess guess"},
            environ_base={"REMOTE_ADDR": f"203.0.113.{n}"},
        )
        assert guess.status_code in (401, 429)
    owner = app.test_client()
    sign_in = {"data": {"username": "admin-alice", "password": PASSWORD}, "environ_base": {"REMOTE_ADDR": "10.0.0.8"}}
    response = owner.post("/login", **sign_in)
    assert response.status_code == 429 and 1 <= int(response.headers["Retry-After"]) <= 9
    assert "Try again in" in response.get_data(as_text=True) and "second" in response.get_data(as_text=True)
    assert events(app, "sign_in_throttled")[-1].address == "10.0.0.8"
    with app.app_context():  # let the back-off pass instead of sleeping
        for event in db.session.scalars(select(AuditEvent).where(AuditEvent.action == "sign_in_failed")):
            event.created_at -= timedelta(seconds=10)
        db.session.commit()
    assert owner.post("/login", **sign_in).status_code == 302


def test_concurrent_failures_are_all_counted(make_app):
    """Attempts are counted before the slow password check: a burst in parallel gets no more through, even
    where the first attempt to be given an id is the last to commit (a PostgreSQL sequence allows that)."""
    app = make_app(SIGN_IN_LIMIT_PER_ACCOUNT=5, SIGN_IN_LIMIT_PER_ADDRESS=100)
    add_user(app, "alice")
    held = []
    lock = threading.Lock()

    def hold_the_first(_session, _context) -> None:  # between the attempt's INSERT and its COMMIT
        with lock:
            first = not held
            held.append(True)
        if first:
            time.sleep(0.5)

    def attempt(_):
        return app.test_client().post("/login", data={"username": "alice", "password": "guess guess"}).status_code

    event.listen(Session, "after_flush", hold_the_first)
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(attempt, range(24)))
    finally:
        event.remove(Session, "after_flush", hold_the_first)
    assert statuses.count(401) == 5 and statuses.count(429) == 19
    assert len(events(app, "sign_in_failed")) == 5


def test_wrong_current_password_is_counted_and_limited(make_app):
    app = make_app(SIGN_IN_LIMIT_PER_ACCOUNT=2)
    client = clinician_client(app, "alice")
    change = {"current": "not my password", "new": "a brand new pw", "repeat": "a brand new pw"}
    for _ in range(2):
        assert client.post("/account/password", data=change).status_code == 400
    refused = client.post("/account/password", data={**change, "current": PASSWORD})
    assert refused.status_code == 429
    failed = events(app, "sign_in_failed")
    assert [e.detail for e in failed] == ["current password on the password page"] * 2


def test_failed_sign_ins_are_throttled_per_address(make_app):
    app = make_app(SIGN_IN_LIMIT_PER_ADDRESS=4)
    add_user(app, "alice")
    client = app.test_client()
    for n in range(4):
        assert client.post("/login", data={"username": f"user{n}", "password": "guess guess"}).status_code == 401
    assert client.post("/login", data={"username": "alice", "password": PASSWORD}).status_code == 429
    other = app.test_client()
    response = other.post(
        "/login", data={"username": "alice", "password": PASSWORD}, environ_base={"REMOTE_ADDR": "10.0.0.7"}
    )
    assert response.status_code == 302


def test_throttling_ends_after_the_window(make_app):
    app = make_app(SIGN_IN_LIMIT_PER_ACCOUNT=1, SIGN_IN_WINDOW_SECONDS=1)
    add_user(app, "alice")
    client = app.test_client()
    client.post("/login", data={"username": "alice", "password": "guess guess"})
    assert client.post("/login", data={"username": "alice", "password": PASSWORD}).status_code == 429
    with app.app_context():  # age the failure past the window instead of sleeping
        for event in db.session.scalars(select(AuditEvent).where(AuditEvent.action == "sign_in_failed")):
            event.created_at = event.created_at.replace(year=event.created_at.year - 1)
        db.session.commit()
    assert client.post("/login", data={"username": "alice", "password": PASSWORD}).status_code == 302


# -- roles and user management ------------------------------------------------------------------------


def test_clinicians_cannot_manage_users_or_read_the_audit_log(client):
    for path in ("/admin/users", "/admin/audit"):
        response = client.get(path)
        assert response.status_code == 403 and "administrators" in response.get_data(as_text=True)
    assert client.post("/admin/users", data={"username": "mallory", "role": "admin"}).status_code == 403


def test_admin_adds_a_user_who_must_choose_a_password(app, admin_client):
    created = admin_client.post("/admin/users", data={"username": "carol", "role": "clinician"})
    assert created.status_code == 303 and created.location == "/admin/users"  # Post/Redirect/Get
    page = admin_client.get("/admin/users")
    password = re.search(r"data-one-time-password>([^<]+)<", page.get_data(as_text=True)).group(1)
    assert "data-one-time-password" not in admin_client.get("/admin/users").get_data(as_text=True)  # shown once
    carol = app.test_client()
    assert carol.post("/login", data={"username": "carol", "password": password}).status_code == 302
    forced = carol.get("/history")
    assert forced.status_code == 302 and forced.location == "/account/password?next=/history"
    assert carol.get("/api/v1/predictions").status_code == 302
    changed = carol.post(
        "/account/password", data={"current": password, "new": "carol's own pw", "repeat": "carol's own pw"}
    )
    assert changed.status_code == 302
    assert carol.get("/history").status_code == 200
    assert admin_client.post("/admin/users", data={"username": "CAROL", "role": "clinician"}).status_code == 400
    assert [e.target for e in events(app, "user_created")][-1] == "user:carol"
    assert events(app, "password_changed")[-1].username == "carol"


def test_disabled_user_cannot_sign_in_or_use_a_session_or_token(app, admin_client, chest_png):
    bob_id = add_user(app, "bob")
    bob = signed_in(app, "bob")
    token = token_for(app, "bob")
    assert post_upload(app.test_client(), chest_png, {"Authorization": f"Bearer {token}"}).status_code == 201
    confirm = admin_client.get(f"/admin/users/{bob_id}/disable")
    assert confirm.status_code == 200 and bob.get("/history").status_code == 200  # asking changes nothing
    assert admin_client.post(f"/admin/users/{bob_id}/disable").status_code == 302
    assert bob.get("/history").status_code == 302  # the open session ended
    again = app.test_client().post("/login", data={"username": "bob", "password": PASSWORD})
    assert again.status_code == 401 and "disabled" in again.get_data(as_text=True)
    refused = app.test_client().get("/api/v1/predictions", headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 401 and "disabled" in refused.get_json()["error"]
    assert admin_client.post(f"/admin/users/{bob_id}/enable").status_code == 302
    assert signed_in(app, "bob").get("/history").status_code == 200
    assert [e.action for e in events(app) if e.target == "user:bob"][-2:] == ["user_disabled", "user_enabled"]


def test_admin_resets_a_password(app, admin_client):
    bob_id = add_user(app, "bob")
    bob = signed_in(app, "bob")
    confirm = admin_client.get(f"/admin/users/{bob_id}/reset")  # the list's link: a confirmation, no change
    assert confirm.status_code == 200 and bob.get("/history").status_code == 200
    assert f'action="/admin/users/{bob_id}/reset"' in confirm.get_data(as_text=True)
    reset = admin_client.post(f"/admin/users/{bob_id}/reset")
    assert reset.status_code == 303 and reset.location == "/admin/users"
    page = admin_client.get("/admin/users")
    password = re.search(r"data-one-time-password>([^<]+)<", page.get_data(as_text=True)).group(1)
    assert "data-one-time-password" not in admin_client.get("/admin/users").get_data(as_text=True)  # a reload
    assert bob.get("/history").status_code == 302  # signed out by the reset
    assert app.test_client().post("/login", data={"username": "bob", "password": PASSWORD}).status_code == 401
    fresh = app.test_client()
    assert fresh.post("/login", data={"username": "bob", "password": password}).status_code == 302
    assert fresh.get("/").location == "/account/password?next=/"
    assert events(app, "password_reset")[-1].target == "user:bob"


def test_admin_cannot_lock_themselves_out(app, admin_client):
    me = user_row(app, "boss")
    response = admin_client.post(f"/admin/users/{me.id}/disable")
    assert response.status_code == 400 and "another administrator" in response.get_data(as_text=True)
    assert user_row(app, "boss").active


def test_password_change_checks_the_current_one(client):
    wrong = client.post(
        "/account/password", data={"current": "nope nope nope", "new": "a new password", "repeat": "a new password"}
    )
    assert wrong.status_code == 400 and "current password is wrong" in wrong.get_data(as_text=True)
    short = client.post("/account/password", data={"current": PASSWORD, "new": "short", "repeat": "short"})
    assert short.status_code == 400 and "at least 10" in short.get_data(as_text=True)


# -- API tokens ---------------------------------------------------------------------------------------


def test_token_lifecycle(app, client, chest_png):
    created = client.post("/account/tokens", data={"label": "PACS bridge"})
    assert created.status_code == 303 and created.location == "/account"  # Post/Redirect/Get
    token = re.search(r"data-new-token>([^<]+)<", client.get("/account").get_data(as_text=True)).group(1)
    assert token.startswith("cxr_")
    bearer = {"Authorization": f"Bearer {token}"}
    script = app.test_client()
    created = post_upload(script, chest_png, bearer)
    assert created.status_code == 201 and created.get_json()["user"] == "clinician"
    assert "Set-Cookie" not in created.headers  # a token request starts no session
    assert script.get(f"/api/v1/predictions/{created.get_json()['id']}", headers=bearer).status_code == 200
    assert script.get("/history").status_code == 302  # tokens are for the API only
    assert token not in client.get("/account").get_data(as_text=True)  # shown once
    with app.app_context():
        from webapp.db import ApiToken

        row = db.session.scalar(select(ApiToken))
        assert row.digest != token and row.last_used_at is not None
        token_id = row.id
    assert client.post(f"/account/tokens/{token_id}/revoke").status_code == 302
    revoked = script.get("/api/v1/predictions", headers=bearer)
    assert revoked.status_code == 401 and "revoked" in revoked.get_json()["error"]
    assert [e.action for e in events(app) if e.target == f"token:{token_id}"] == ["token_created", "token_revoked"]


def test_users_cannot_revoke_each_others_tokens(app, client):
    add_user(app, "bob")
    token_for(app, "bob")
    with app.app_context():
        from webapp.db import ApiToken

        token_id = db.session.scalar(select(ApiToken.id))
    assert client.post(f"/account/tokens/{token_id}/revoke").status_code == 404


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer cxr_made_up"])
def test_malformed_or_unknown_tokens_get_401(anon, header):
    response = anon.get("/api/v1/predictions", headers={"Authorization": header})
    assert response.status_code == 401 and response.is_json and response.get_json()["error"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


# -- records of who did what --------------------------------------------------------------------------


def test_predictions_and_reviews_record_their_user(app, client, upload):
    record = upload()
    assert record["user"] == "clinician"
    client.post(f"/predictions/{record['id']}/reviews", data={"reading": "negative", "status": "final"})
    detail = client.get(f"/predictions/{record['id']}").get_data(as_text=True)
    assert "by clinician" in detail and "· clinician" in detail
    history = client.get("/history").get_data(as_text=True)
    assert "<td>clinician</td>" in history
    csv = client.get("/history.csv").get_data(as_text=True).splitlines()
    assert csv[0].split(",")[2] == "user" and csv[1].split(",")[2] == "clinician"
    with app.app_context():
        row = db.session.get(Prediction, record["id"])
        assert row.user.username == "clinician" and row.reviews[0].user.username == "clinician"


def test_audit_trail_records_each_action(app, client, admin_client, upload):
    record = upload(reference="R-1")
    pid = f"prediction:{record['id']}"
    client.get(f"/predictions/{record['id']}")
    client.get(f"/api/v1/predictions/{record['id']}")
    client.post(
        f"/predictions/{record['id']}/reviews",
        data={"reading": "typical", "status": "preliminary"},
    )
    client.get("/history.csv?q=R-1")
    admin_client.post("/admin/users", data={"username": "dave", "role": "admin"})
    client.post("/logout")
    seen = [(e.username, e.action, e.target) for e in events(app)]
    for expected in [
        ("clinician", "sign_in", None),
        ("boss", "sign_in", None),
        ("clinician", "upload", pid),
        ("clinician", "view", pid),
        ("clinician", "review", pid),
        ("clinician", "export", "history.csv"),
        ("boss", "user_created", "user:dave"),
        ("clinician", "sign_out", None),
    ]:
        assert expected in seen, expected
    assert sum(1 for e in seen if e[1] == "view" and e[2] == pid) == 2  # page and API
    assert events(app, "export")[-1].detail == "q=R-1"
    assert events(app, "upload")[-1].address == "127.0.0.1"


def test_admin_browses_and_filters_the_audit_log(app, client, admin_client, upload):
    record = upload()
    client.get(f"/predictions/{record['id']}")
    page = admin_client.get("/admin/audit?user=clinician&action=view")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "1 entry." in html and f"prediction:{record['id']}" in html
    everything = admin_client.get("/admin/audit")  # the navigation's link: no filter in the query
    assert everything.status_code == 200
    row = r"<td>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d</td>\s*<td>[^<]*</td>\s*<td>([a-z_]+)</td>"
    actions = set(re.findall(row, everything.get_data(as_text=True)))
    assert {"sign_in", "upload", "view"} <= actions
    assert re.search(r'<p class="count">\d+ entries\.</p>', everything.get_data(as_text=True))
    bad = admin_client.get("/admin/audit?date_from=2026-02-02&date_to=2026-01-01")
    assert bad.status_code == 400 and "before the start date" in bad.get_data(as_text=True)
    assert admin_client.get("/admin/audit?action=made_up").status_code == 400


# -- first administrator and CLI ----------------------------------------------------------------------


def fresh_install(make_app, url: str):
    """An app on an empty database, whose first start (`init-db`, gunicorn's start-up) sets it up."""
    app = make_app(SQLALCHEMY_DATABASE_URI=url)
    prepare_database(app)
    return app


def test_first_start_creates_an_admin_with_a_printed_one_time_password(make_app, empty_database_url, capsys):
    app = fresh_install(make_app, empty_database_url)
    printed = capsys.readouterr().out
    password = re.search(r"one-time password: (\S+)", printed).group(1)
    admin = user_row(app, "admin")
    assert admin.role == "admin" and admin.must_change_password
    client = app.test_client()
    assert client.post("/login", data={"username": "admin", "password": password}).status_code == 302
    assert client.get("/admin/users").location == "/account/password?next=/admin/users"
    prepare_database(app)  # a second start (another host) creates nobody
    assert "one-time password" not in capsys.readouterr().out


def test_admin_password_from_the_environment(make_app, empty_database_url, monkeypatch, capsys):
    monkeypatch.setenv("CXR_ADMIN_PASSWORD", "0123456789")  # digits: must stay a string
    app = fresh_install(make_app, empty_database_url)
    assert "one-time password" not in capsys.readouterr().out
    assert not user_row(app, "admin").must_change_password
    assert signed_in(app, "admin", "0123456789").get("/admin/users").status_code == 200


def test_cli_creates_users_and_tokens(app, runner, monkeypatch, chest_png):
    monkeypatch.setenv("CXR_USER_PASSWORD", "a long enough secret")
    result = runner.invoke(args=["create-user", "Eve", "--role", "admin"])
    assert result.exit_code == 0 and "Created the admin 'eve'" in result.output
    assert runner.invoke(args=["create-user", "eve"]).exit_code != 0  # exists
    monkeypatch.setenv("CXR_USER_PASSWORD", "short")
    short = runner.invoke(args=["create-user", "frank"])
    assert short.exit_code != 0 and "at least 10" in short.output
    token = runner.invoke(args=["create-token", "eve", "--label", "monitoring"]).output.strip().splitlines()[-1]
    response = app.test_client().get("/api/v1/predictions", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert runner.invoke(args=["create-token", "nobody"]).exit_code != 0


def test_cli_prompts_for_the_password(app, runner, monkeypatch):
    monkeypatch.delenv("CXR_USER_PASSWORD", raising=False)
    result = runner.invoke(args=["create-user", "gina"], input="gina's password\ngina's password\n")
    assert result.exit_code == 0, result.output
    assert signed_in(app, "gina", "gina's password").get("/history").status_code == 200


def test_a_password_change_or_reset_revokes_the_users_api_tokens(app, client, admin_client):
    def works(token: str) -> int:
        return app.test_client().get("/api/v1/predictions", headers={"Authorization": f"Bearer {token}"}).status_code

    before_change = token_for(app, "clinician")
    assert works(before_change) == 200
    changed = client.post(
        "/account/password", data={"current": PASSWORD, "new": "a fresh passphrase", "repeat": "a fresh passphrase"}
    )
    assert changed.status_code == 302
    assert works(before_change) == 401
    before_reset = token_for(app, "clinician")
    assert works(before_reset) == 200
    assert admin_client.post(f"/admin/users/{user_row(app, 'clinician').id}/reset").status_code == 303
    assert works(before_reset) == 401


def test_a_link_followed_while_signed_out_survives_the_first_password_change(app, admin_client, upload):
    record = upload()
    admin_client.post("/admin/users", data={"username": "erin", "role": "clinician"})
    password = re.search(
        r"data-one-time-password>([^<]+)<", admin_client.get("/admin/users").get_data(as_text=True)
    ).group(1)
    erin = app.test_client()
    link = f"/predictions/{record['id']}"
    to_login = erin.get(link)
    assert to_login.status_code == 302 and to_login.location == f"/login?next=%2Fpredictions%2F{record['id']}"
    signed = erin.post(to_login.location, data={"username": "erin", "password": password})
    assert signed.location == link
    forced = erin.get(link)
    assert forced.location == f"/account/password?next=/predictions/{record['id']}"
    changed = erin.post(forced.location, data={"current": password, "new": "erin's own pw", "repeat": "erin's own pw"})
    assert changed.status_code == 302 and changed.location == link
    assert erin.get(link).status_code == 200


def test_look_alike_user_names_are_refused(admin_client):
    page = admin_client.post("/admin/users", data={"username": "\u0430dmin", "role": "admin"})  # Cyrillic "а"
    assert page.status_code == 400 and "letters (a–z)" in page.get_data(as_text=True)


def test_bulk_reads_are_in_the_audit_trail(app, client, upload):
    record = upload()
    client.get("/history?decision=normal")
    token = token_for(app, "clinician")
    script = app.test_client()
    bearer = {"Authorization": f"Bearer {token}"}
    assert script.get("/api/v1/predictions?per_page=5", headers=bearer).status_code == 200
    assert script.get(f"/predictions/{record['id']}/image.png", headers=bearer).status_code == 200
    listed = events(app, "list")
    assert [(e.username, e.target, e.detail) for e in listed] == [
        ("clinician", "history", "decision=normal page=1"),
        ("clinician", "api/predictions", "all predictions page=1"),
    ]
    images = events(app, "image")
    assert [(e.target, e.detail) for e in images] == [(f"prediction:{record['id']}", "image")]


def test_sign_in_to_continue_is_guidance_not_a_confirmation(anon):
    page = anon.get("/history", follow_redirects=True).get_data(as_text=True)
    assert '<p class="flash flash-info" role="status">Sign in to continue.</p>' in page


def test_session_reads_of_films_and_stored_listings_are_audited(app, client, upload):
    """A copied session cookie that fetches films or the upload page's `?stored=` list leaves a trace."""
    record = upload()
    for kind in ("image.png", "thumbnail.jpg"):
        assert client.get(f"/predictions/{record['id']}/{kind}").status_code == 200
    assert client.get(f"/?stored={record['id']},x,²").status_code == 200
    assert client.get("/?stored=²").status_code == 200  # a digit to str.isdigit, not a row id
    images = events(app, "image")
    assert [(e.username, e.target, e.detail) for e in images] == [
        ("clinician", f"prediction:{record['id']}", "image"),
        ("clinician", f"prediction:{record['id']}", "thumbnail"),
    ]
    listed = events(app, "list")
    assert [(e.username, e.target, e.detail) for e in listed] == [("clinician", "upload", f"stored={record['id']}")]
