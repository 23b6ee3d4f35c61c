"""Access control on every route, CSRF on every form, escaping of user text, path tricks on the image
routes, and the security headers."""

from __future__ import annotations

import io

import pytest

from tests.accounts import clinician_client, csrf_token

PUBLIC = {"auth.login", "health.healthz", "static"}


def concrete_urls(app) -> list[tuple[str, str, str]]:
    """(endpoint, method, URL) for every route, with sample values for its arguments."""
    samples = {
        "prediction_id": 1,
        "other_id": 2,
        "token_id": 1,
        "user_id": 1,
        "kind": "image",
        "extension": "png",
        "name": "roc.png",
        "filename": "style.css",
        "change": "disable",
        "check_id": 1,
    }
    urls = []
    with app.test_request_context():
        from flask import url_for

        for rule in app.url_map.iter_rules():
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                urls.append((rule.endpoint, method, url_for(rule.endpoint, **{a: samples[a] for a in rule.arguments})))
    return urls


def test_every_route_but_sign_in_and_health_refuses_anonymous_access(app, anon):
    checked = 0
    for endpoint, method, url in concrete_urls(app):
        if endpoint in PUBLIC:
            continue
        response = anon.open(url, method=method)
        if url.startswith("/api/"):
            assert response.status_code == 401 and response.is_json, (method, url)
        else:
            assert response.status_code == 302 and response.location.startswith("/login?next="), (method, url)
        checked += 1
    assert checked >= 20  # every blueprint's routes, not an empty map


def test_public_routes_answer_without_a_user(anon):
    assert anon.get("/login").status_code == 200
    assert anon.get("/healthz").status_code == 200
    assert anon.get("/static/style.css").status_code == 200


@pytest.fixture
def csrf_app(make_app):
    return make_app(WTF_CSRF_ENABLED=True)


def test_every_form_post_needs_its_csrf_token(csrf_app, chest_png):
    from tests.accounts import add_user, signed_in

    anon = csrf_app.test_client()
    refused = anon.post("/login", data={"username": "x", "password": "y"})
    assert refused.status_code == 400 and "Reload the page" in refused.get_data(as_text=True)
    add_user(csrf_app, "boss", "admin")
    client = signed_in(csrf_app, "boss")  # with the form's token
    posts = {
        "/": {"files": (io.BytesIO(chest_png), "a.png")},
        "/predictions/1/reviews": {"reading": "negative", "status": "final"},
        "/account/password": {"current": "a", "new": "b", "repeat": "b"},
        "/account/tokens": {"label": "x"},
        "/account/tokens/1/revoke": {},
        "/admin/users": {"username": "x", "role": "clinician"},
        "/admin/users/1/disable": {},
        "/admin/users/1/enable": {},
        "/admin/users/1/reset": {},
        "/logout": {},
    }
    for path, data in posts.items():
        response = client.post(path, data=data)
        assert response.status_code == 400, path
        assert "Reload the page" in response.get_data(as_text=True), path
    assert client.get("/history").status_code == 200  # still signed in: the sign-out was refused too
    token = csrf_token(client, "/account")
    created = client.post("/account/tokens", data={"label": "x", "csrf_token": token})
    assert created.status_code == 303 and created.location == "/account"


def test_api_token_requests_are_exempt_from_csrf(csrf_app, chest_png):
    from tests.accounts import add_user, token_for

    add_user(csrf_app, "robot")
    bearer = {"Authorization": f"Bearer {token_for(csrf_app, 'robot')}"}
    response = csrf_app.test_client().post(
        "/api/v1/predictions", data={"file": (io.BytesIO(chest_png), "a.png")}, headers=bearer
    )
    assert response.status_code == 201


SCRIPT = "<script>alert(1)</script>"


def test_script_in_file_name_note_and_reference_is_shown_escaped(app, client, admin_client, chest_png):
    created = client.post(
        "/api/v1/predictions",
        data={
            "file": (io.BytesIO(chest_png), f"{SCRIPT}.png"),
            "note": SCRIPT,
            "reference": SCRIPT,
        },
    ).get_json()
    client.post(
        f"/predictions/{created['id']}/reviews", data={"reading": "other", "status": "final", "comment": SCRIPT}
    )
    pages = [
        client.get(f"/predictions/{created['id']}"),
        client.get("/history"),
        client.get(f"/history?q={SCRIPT}"),
        admin_client.get(f"/admin/audit?user={SCRIPT}"),
    ]
    for page in pages:
        html = page.get_data(as_text=True)
        assert "<script>alert" not in html, page.request.path
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[0].get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[1].get_data(as_text=True)
    assert client.get(f"/api/v1/predictions/{created['id']}").get_json()["note"] == SCRIPT  # data, not markup


@pytest.mark.parametrize(
    "path",
    [
        "/predictions/1/../../../../etc/passwd",
        "/predictions/1/..%2F..%2F..%2Fetc%2Fpasswd.png",
        "/predictions/1/image.png/../../secret_key",
        "/predictions/1/%2e%2e/image.png",
        "/predictions/1/secret_key.png",
        "/predictions/-1/image.png",
        "/model/report/..%2Fcnn.keras",
        "/model/report/../model_card.json",
        "/static/..%2F..%2Finstance%2Fsecret_key",
    ],
)
def test_image_routes_refuse_path_tricks(client, upload, path):
    upload()
    response = client.get(path)
    assert response.status_code in (302, 404), response.status_code
    if response.status_code == 302:  # werkzeug normalised the dots: follow to where it points
        assert client.get(response.location).status_code == 404
    assert b"secret" not in response.data and b"root:" not in response.data


def test_security_headers_on_pages_api_errors_and_sign_in(client, anon):
    for response in (
        client.get("/history"),
        client.get("/api/v1/predictions"),
        client.get("/nowhere"),
        anon.get("/login"),
        anon.get("/healthz"),
    ):
        headers = response.headers
        policy = headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert "frame-ancestors 'none'" in policy
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "same-origin"
    assert "no-store" in client.get("/history").headers["Cache-Control"]


def test_secret_key_file_is_private(make_app, tmp_path):
    import stat

    app = make_app(SECRET_KEY=None)
    key_file = tmp_path / "instance" / "secret_key"
    assert app.config["SECRET_KEY"] == key_file.read_text().strip()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_uploads_of_another_clinician_are_visible_but_attributed(app, client, upload):
    record = upload()
    other = clinician_client(app, "other")
    assert other.get(f"/predictions/{record['id']}").status_code == 200
    assert "by clinician" in other.get(f"/predictions/{record['id']}").get_data(as_text=True)


def test_untrusted_host_headers_are_refused(make_app):
    """With TRUSTED_HOSTS set, no redirect is ever built from a Host the service does not answer for."""
    app = make_app(TRUSTED_HOSTS=["cxr.hospital.example"])
    client = app.test_client()
    refused = client.get("/history", headers={"Host": "evil.example"})
    assert refused.status_code == 400 and refused.mimetype == "text/plain"
    assert "Location" not in refused.headers and refused.headers["X-Frame-Options"] == "DENY"
    accepted = client.get("/history", headers={"Host": "cxr.hospital.example"})
    assert accepted.status_code == 302 and accepted.location.startswith("/login")


def test_exports_are_never_stored_by_caches(client, upload):
    record = upload()
    for url in ("/history.csv", f"/predictions/{record['id']}/report.pdf"):
        response = client.get(url)
        assert response.status_code == 200 and response.mimetype in ("text/csv", "application/pdf")
        assert "no-store" in response.headers["Cache-Control"], url


@pytest.mark.parametrize("route", ["reviews", "reference"])
@pytest.mark.parametrize(
    ("body", "message"),
    [("[" * 100_000 + "]" * 100_000, "nested too deeply"), ('{"comment": "\\ud800", "reference": "\\udfff"}', "lone")],
    ids=["deep-nesting", "lone-surrogate"],
)
def test_hostile_json_gets_400_not_500(client, upload, route, body, message):
    response = client.post(f"/api/v1/predictions/{upload()['id']}/{route}", data=body, content_type="application/json")
    assert response.status_code == 400 and message in response.get_json()["error"], response.get_data()[:300]


def test_too_large_names_the_configured_limit(make_app, chest_png):
    client = clinician_client(make_app(MAX_CONTENT_LENGTH=3 * 1024 * 1024 // 2, MAX_FORM_MEMORY_SIZE=64 * 1024))
    whole = client.post("/api/v1/predictions", data={"file": (io.BytesIO(b"\0" * (2 << 20)), "big.png")})
    assert whole.status_code == 413 and "larger than the 1.5 MB limit" in whole.get_json()["error"]
    field = client.post("/api/v1/predictions", data={"file": (io.BytesIO(chest_png), "a.png"), "note": "x" * 70_000})
    assert field.status_code == 413 and "form field is larger than the 64 KB limit" in field.get_json()["error"]
