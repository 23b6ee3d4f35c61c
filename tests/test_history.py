"""The history page, its filters and CSV export, and clinician reviews on the detail page."""

from __future__ import annotations

import csv
import io
from datetime import datetime

import pytest

from tests.accounts import clinician_client
from webapp.db import Prediction, Review, db

# The same tests on PostgreSQL (the several-hosts deployment) as on SQLite: see `databases` in tests/conftest.py.
pytestmark = pytest.mark.databases("sqlite", "postgres")


def _backdate(app, prediction_id: int, when: datetime) -> None:
    with app.app_context():
        db.session.get(Prediction, prediction_id).created_at = when
        db.session.commit()


def _relabel(app, prediction_id: int, label: str) -> None:
    """Give a stored row another class, so that class filters have something to separate."""
    with app.app_context():
        db.session.get(Prediction, prediction_id).label = label
        db.session.commit()


def test_history_lists_newest_first_with_thumbnails(client, upload):
    first, second = upload(reference="A-1"), upload(reference="B-2")
    html = client.get("/history").get_data(as_text=True)
    assert html.index(f"#{second['id']}<") < html.index(f"#{first['id']}<")
    assert f"/predictions/{first['id']}/thumbnail.jpg" in html
    assert "A-1" in html and "B-2" in html and first["class"] in html
    assert f"{first['probabilities']['covid'] * 100:.1f} %" in html  # the p(COVID-19) column
    thumbnail = client.get(f"/predictions/{first['id']}/thumbnail.jpg")
    assert thumbnail.mimetype == "image/jpeg" and thumbnail.data.startswith(b"\xff\xd8")
    assert client.get(f"/predictions/{first['id']}/thumbnail.png").status_code == 404  # not how it is stored


def test_history_pagination(make_app, chest_png):
    app = make_app(PER_PAGE=2)
    client = clinician_client(app)
    ids = [
        client.post(
            "/api/v1/predictions?force=1", data={"file": (io.BytesIO(chest_png), f"{i}.png"), "reference": "P"}
        ).get_json()["id"]
        for i in range(3)
    ]
    page1 = client.get("/history?q=P").get_data(as_text=True)
    assert f"#{ids[2]}<" in page1 and f"#{ids[1]}<" in page1 and f"#{ids[0]}<" not in page1
    assert 'href="/history?q=P&amp;page=2"' in page1  # the filters survive paging
    page2 = client.get("/history?q=P&page=2").get_data(as_text=True)
    assert f"#{ids[0]}<" in page2 and f"#{ids[2]}<" not in page2
    assert client.get("/history?page=9").status_code == 404


def test_history_filters(app, client, upload, bundle):
    old, new, other = upload(reference="Ward-7/alpha"), upload(reference="ward-7/beta"), upload(reference="100%_x")
    other_class = next(c for c in bundle.classes if c != other["class"])
    _relabel(app, other["id"], other_class)
    _backdate(app, old["id"], datetime(2024, 1, 15, 12, 0))

    def listed(query: str) -> set[int]:
        data = client.get(f"/api/v1/predictions?{query}").get_json()
        html = client.get(f"/history?{query}").get_data(as_text=True)
        ids = {item["id"] for item in data["items"]}
        assert {i for i in (old["id"], new["id"], other["id"]) if f"#{i}<" in html} == ids
        return ids

    assert listed("") == {old["id"], new["id"], other["id"]}
    assert listed(f"class={other_class}") == {other["id"]}
    assert listed("q=WARD-7") == {old["id"], new["id"]}  # case-insensitive
    assert listed("q=100%25_") == {other["id"]}  # % and _ are literal characters
    assert listed("q=%25") == {other["id"]}
    assert listed("date_to=2024-01-15") == {old["id"]}  # inclusive
    assert listed("date_from=2024-01-16") == {new["id"], other["id"]}
    assert listed("date_from=2024-01-01&date_to=2024-01-31&q=alpha") == {old["id"]}


@pytest.mark.parametrize(
    "query", ["date_from=15/01/2024", "class=pneumonia", "date_from=2024-02-01&date_to=2024-01-01"]
)
def test_invalid_filters(client, query):
    response = client.get(f"/history?{query}")
    assert response.status_code == 400
    assert 'class="field-error"' in response.get_data(as_text=True)
    assert client.get(f"/history.csv?{query}").status_code == 400
    api = client.get(f"/api/v1/predictions?{query}")
    assert api.status_code == 400 and api.get_json()["error"]


def test_csv_export_follows_filters(app, client, upload, bundle):
    kept = upload(reference='=HYPERLINK("http://x")', note="first line\nsecond, line")
    upload(reference="other")
    response = client.get("/history.csv?q=HYPERLINK")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(rows) == 1
    row = rows[0]
    assert int(row["id"]) == kept["id"] and row["predicted_class"] == kept["class"]
    assert row["reference"].startswith("'=")  # a spreadsheet will not run it as a formula
    assert row["note"] == "first line\nsecond, line"
    for cls in bundle.classes:
        assert float(row[f"p_{cls}"]) == pytest.approx(kept["probabilities"][cls], abs=1e-4)
        assert float(row[f"cnn_p_{cls}"]) == pytest.approx(kept["cnn_probabilities"][cls], abs=1e-4)
    assert row["model_version"] == bundle.version and row["reviews"] == "0"
    header = client.get("/history.csv?q=nothing-matches").get_data(as_text=True).splitlines()
    assert len(header) == 1 and header[0].startswith("id,created_utc")


def test_a_reading_is_saved_with_its_status_and_agreement(app, client, upload):
    prediction = upload()
    response = client.post(
        f"/predictions/{prediction['id']}/reviews",
        data={"reading": "typical", "status": "preliminary", "comment": "Looks right."},
    )
    assert response.status_code == 302 and response.location.endswith(f"/predictions/{prediction['id']}#reviews")
    html = client.get(response.location).get_data(as_text=True)
    assert "Reading saved." in html and "Typical appearance for COVID-19 pneumonia" in html and "Looks right." in html
    assert '<span class="review-status review-status-preliminary">Preliminary</span>' in html
    agrees = prediction["decision"] == "covid"  # a typical reading agrees with a COVID-19 call only
    assert ("agrees with the model" if agrees else "disagrees with the model") in html
    with app.app_context():
        review = db.session.scalars(db.select(Review)).one()
        assert (review.reading, review.status, review.agrees) == ("typical", "preliminary", agrees)
    api = client.get(f"/api/v1/predictions/{prediction['id']}").get_json()
    assert api["reviews"][0]["reading"] == "typical" and api["reviews"][0]["status"] == "preliminary"
    assert api["reviews"][0]["agrees_with_model"] is agrees and api["reviews"][0]["comment"] == "Looks right."
    rows = list(csv.DictReader(io.StringIO(client.get("/history.csv").get_data(as_text=True))))
    assert (rows[0]["latest_reading"], rows[0]["latest_review_status"]) == ("typical", "preliminary")
    assert rows[0]["latest_review_agrees_with_model"] == ("yes" if agrees else "no")
    assert rows[0]["decision_label"] == prediction["decision_label"]


def test_review_errors_are_listed_focused_and_announced(app, client, upload):
    prediction = upload()
    url = f"/predictions/{prediction['id']}/reviews"
    for data, message in (
        ({}, "Choose your reading."),
        ({"reading": "typical"}, "Choose whether the review is preliminary or final."),
        ({"reading": "other", "status": "final"}, "Name the other finding in the comment."),
        ({"reading": "normal", "status": "final"}, "Not a valid choice."),
    ):
        response = client.post(url, data=data)
        assert response.status_code == 400, data
        html = response.get_data(as_text=True)
        # The summary at the form is an alert that app.js focuses (which scrolls it into view).
        summary = html[html.index('<div class="error-summary"') : html.index("</div>", html.index("error-summary"))]
        assert 'role="alert"' in summary and 'tabindex="-1"' in summary and "data-focus-on-load" in summary
        assert f"<li>{message}</li>" in summary, (data, summary)
    assert (
        client.post(url, data={"reading": "other", "status": "final", "comment": "<b>rib fracture</b>"}).status_code
        == 302
    )
    html = client.get(f"/predictions/{prediction['id']}").get_data(as_text=True)
    assert "Other finding (name it in the comment)" in html and "&lt;b&gt;rib fracture&lt;/b&gt;" in html
    assert "error-summary" not in html
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Review.id))) == 1


def test_missing_prediction_pages(client):
    assert client.get("/predictions/999").status_code == 404
    assert client.get("/predictions/999/image.png").status_code == 404
    assert client.post("/predictions/999/reviews", data={"reading": "negative", "status": "final"}).status_code == 404
    assert client.get("/predictions/1/secret.png").status_code == 404
    response = client.get("/no-such-page")
    assert response.status_code == 404 and "Nothing was found" in response.get_data(as_text=True)
    assert client.delete("/history").status_code == 405


def test_the_count_agrees_with_its_number(client, upload):
    upload(reference="ONLY-1")
    upload(reference="OTHER-2")
    one = client.get("/history?q=ONLY").get_data(as_text=True)
    assert '<p class="count">1 prediction matches the filters.</p>' in one
    two = client.get("/history?q=-").get_data(as_text=True)
    assert '<p class="count">2 predictions match the filters.</p>' in two
