"""Values no database or header can hold get a clear 4xx (or an empty answer), never a 500."""

from __future__ import annotations

import pytest

from tests.accounts import PASSWORD, add_user, csrf_token

TOO_BIG = "9223372036854775808"  # 2**63


@pytest.mark.parametrize(
    "path",
    [
        f"/predictions/{TOO_BIG}",
        f"/predictions/{TOO_BIG}/image.png",
        f"/predictions/{TOO_BIG}/overlay.jpg",
        f"/api/v1/predictions/{TOO_BIG}",
        "/history?page=9223372036854775807",
        "/api/v1/predictions?page=9223372036854775807",
    ],
)
def test_ids_and_pages_beyond_any_row_are_not_found(client, path):
    assert client.get(path).status_code == 404


def test_a_review_of_a_too_large_id_is_not_found(client):
    assert (
        client.post(f"/predictions/{TOO_BIG}/reviews", data={"reading": "negative", "status": "final"}).status_code
        == 404
    )


@pytest.mark.parametrize("path", ["/history", "/history.csv", "/api/v1/predictions"])
def test_the_last_representable_day_filters(client, upload, path):
    stored = upload()
    response = client.get(f"{path}?date_to=9999-12-31")
    assert response.status_code == 200
    if path.startswith("/api"):
        assert [item["id"] for item in response.get_json()["items"]] == [stored["id"]]
    elif path.endswith(".csv"):
        assert response.get_data(as_text=True).splitlines()[1].startswith(f"{stored['id']},")
    else:
        assert f'href="/predictions/{stored["id"]}"' in response.get_data(as_text=True)


def test_the_audit_log_filters_to_the_last_representable_day(admin_client):
    response = admin_client.get("/admin/audit?date_to=9999-12-31")
    assert response.status_code == 200 and '<p class="count">' in response.get_data(as_text=True)


def test_a_next_with_a_line_break_cannot_split_the_redirect(app):
    add_user(app, "nurse", "clinician")
    client = app.test_client()
    path = "/login?next=/%0d%0aSet-Cookie:x=1"
    response = client.post(
        path, data={"username": "nurse", "password": PASSWORD, "csrf_token": csrf_token(client, path) or ""}
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/" and "x=1" not in response.headers.get("Set-Cookie", "")
