"""The worklist as a triage queue: urgent films first, then unreviewed COVID-19 calls; a claimed film is
read by its clinician only; the navigation shows how many films nobody has read."""

from __future__ import annotations

from datetime import timedelta

from tests.accounts import add_user, signed_in
from webapp.db import AuditEvent, Prediction, db, utcnow
from webapp.triage import CLAIM_MINUTES

READ = {"reading": "negative", "status": "final"}


def set_fields(app, prediction_id: int, **values) -> None:
    with app.app_context():
        row = db.session.get(Prediction, prediction_id)
        for name, value in values.items():
            setattr(row, name, value)
        db.session.commit()


def test_default_order_is_urgent_then_unreviewed_covid_calls(app, client, upload):
    normal, covid, indeterminate, reviewed_covid, urgent = (upload() for _ in range(5))
    for prediction, decision in (
        (normal, "normal"),
        (covid, "covid"),
        (indeterminate, "indeterminate"),
        (reviewed_covid, "covid"),
        (urgent, "normal"),
    ):
        set_fields(app, prediction["id"], decision=decision)
    assert client.post(f"/api/v1/predictions/{reviewed_covid['id']}/reviews", json=READ).status_code == 201
    response = client.post(f"/predictions/{urgent['id']}/urgent", data={"action": "urgent"})
    assert response.status_code == 302
    expected = [urgent["id"], covid["id"], indeterminate["id"], normal["id"], reviewed_covid["id"]]
    listed = client.get("/api/v1/predictions").get_json()["items"]
    assert [item["id"] for item in listed] == expected
    assert listed[0]["urgent"] is True and listed[1]["urgent"] is False
    html = client.get("/history").get_data(as_text=True)
    assert [int(n) for n in __import__("re").findall(r'<td><a href="/predictions/(\d+)">#', html)] == expected
    assert '<option selected value="triage">' in html
    assert [i["id"] for i in client.get("/api/v1/predictions?sort=-date").get_json()["items"]] == [
        urgent["id"],
        reviewed_covid["id"],
        indeterminate["id"],
        covid["id"],
        normal["id"],
    ]
    assert client.post(f"/predictions/{urgent['id']}/urgent", data={"action": "routine"}).status_code == 302
    assert client.get(f"/api/v1/predictions/{urgent['id']}").get_json()["urgent"] is False
    assert client.post(f"/predictions/{urgent['id']}/urgent", data={"action": "later"}).status_code == 400


def test_a_claimed_film_is_read_by_its_clinician_only(app, client, upload):
    prediction = upload()
    add_user(app, "dana")
    dana = signed_in(app, "dana")
    page = f"/predictions/{prediction['id']}"
    assert client.post(f"{page}/claim", data={"action": "claim"}).status_code == 302
    assert "You claimed this film." in client.get(page).get_data(as_text=True)
    seen = dana.get(page).get_data(as_text=True)
    assert "Claimed by <strong>clinician</strong>" in seen and 'value="claim"' not in seen
    assert client.get(f"/api/v1{page}").get_json()["claimed_by"] == "clinician"

    refused = dana.post(f"/api/v1{page}/reviews", json=READ)
    assert refused.status_code == 409 and "clinician is reading this film" in refused.get_json()["error"]
    assert dana.post(f"{page}/reviews", data=READ).status_code == 409
    assert dana.post(f"{page}/claim", data={"action": "claim"}).status_code == 409
    assert dana.post(f"{page}/claim", data={"action": "release"}).status_code == 409

    # A preliminary reading keeps the claim; a final one ends it.
    assert client.post(f"/api/v1{page}/reviews", json={**READ, "status": "preliminary"}).status_code == 201
    assert client.get(f"/api/v1{page}").get_json()["claimed_by"] == "clinician"
    assert client.post(f"/api/v1{page}/reviews", json=READ).status_code == 200
    assert client.get(f"/api/v1{page}").get_json()["claimed_by"] is None
    assert dana.post(f"/api/v1{page}/reviews", json=READ).status_code == 201

    # A claim lapses after CLAIM_MINUTES; a released one at once.
    assert dana.post(f"{page}/claim", data={"action": "claim"}).status_code == 302
    set_fields(app, prediction["id"], claimed_at=utcnow() - timedelta(minutes=CLAIM_MINUTES + 1))
    assert client.get(f"/api/v1{page}").get_json()["claimed_by"] is None
    assert client.post(f"{page}/claim", data={"action": "claim"}).status_code == 302
    assert client.post(f"{page}/claim", data={"action": "release"}).status_code == 302
    assert dana.post(f"{page}/claim", data={"action": "claim"}).status_code == 302
    with app.app_context():
        details = db.session.scalars(
            db.select(AuditEvent.detail).where(AuditEvent.action == "triage").order_by(AuditEvent.id)
        ).all()
    assert details == ["claimed", "claimed", "claimed", "released", "claimed"]


def test_navigation_shows_the_unread_count(client, upload):
    first, _ = upload(), upload()
    assert '<span class="unread" data-unread="2">2 unread</span>' in client.get("/").get_data(as_text=True)
    client.post(f"/api/v1/predictions/{first['id']}/reviews", json=READ)
    assert '<span class="unread" data-unread="1">1 unread</span>' in client.get("/history").get_data(as_text=True)


def test_strangers_see_no_model_version_or_count(anon, bundle):
    page = anon.get("/login").get_data(as_text=True)
    assert bundle.version not in page and "unread" not in page
