"""The clinician worklist: history filters by review state and reviewer and orders by p(covid); one review per
clinician per prediction, editable on the result page and through the API, with its earlier versions kept;
and the migration that brings older databases (duplicate reviews, no p(covid) column) to this schema."""

from __future__ import annotations

import csv
import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import flask_migrate
import pytest
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from tests.accounts import add_user, signed_in
from webapp.db import MIGRATIONS, Prediction, Review, ReviewEdit, db
from webapp.readings import READINGS, agrees_with_model

# The same tests on PostgreSQL (the several-hosts deployment) as on SQLite: see `databases` in tests/conftest.py.
pytestmark = pytest.mark.databases("sqlite", "postgres")

READ = {"reading": "negative", "status": "final"}


def set_p_covid(app, values: dict[int, float]) -> None:
    """Give stored predictions chosen p(covid) values, since one test film always scores the same."""
    with app.app_context():
        for prediction_id, value in values.items():
            db.session.get(Prediction, prediction_id).positive_probability = value
        db.session.commit()


# -- the worklist ------------------------------------------------------------------------------------------


def test_history_filters_by_review_state_and_reviewer(app, client, upload):
    first, second, third = upload(), upload(), upload()
    add_user(app, "dana")
    dana = signed_in(app, "dana")
    assert client.post(f"/api/v1/predictions/{first['id']}/reviews", json=READ).status_code == 201
    assert dana.post(f"/api/v1/predictions/{second['id']}/reviews", json=READ).status_code == 201

    def ids(query: str) -> list[int]:
        response = client.get(f"/api/v1/predictions?{query}")
        assert response.status_code == 200, response.get_json()
        return [item["id"] for item in response.get_json()["items"]]

    assert ids("reviewed=no") == [third["id"]]
    assert ids("reviewed=yes") == [second["id"], first["id"]]
    assert ids("reviewer=dana") == [second["id"]]
    assert ids("reviewer=CLINICIAN") == [first["id"]]
    assert ids("reviewed=no&reviewer=dana") == []
    page = client.get("/history?reviewed=no")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert f">#{third['id']}<" in html and f">#{first['id']}<" not in html
    rows = list(csv.DictReader(io.StringIO(client.get("/history.csv?reviewer=dana").get_data(as_text=True))))
    assert [int(r["id"]) for r in rows] == [second["id"]]
    item = client.get("/api/v1/predictions?reviewer=dana").get_json()["items"][0]
    assert item["latest_review"]["user"] == "dana" and item["latest_review"]["reading"] == "negative"


@pytest.mark.parametrize(
    "query, message",
    [
        ("reviewed=maybe", "Unknown review state 'maybe'."),
        ("reviewer=nobody", "Unknown reviewer 'nobody'."),
        ("sort=size", "Unknown order 'size'."),
    ],
)
def test_bad_worklist_filters_are_400_with_a_message(client, query, message):
    response = client.get(f"/api/v1/predictions?{query}")
    assert response.status_code == 400 and message in response.get_json()["error"]
    page = client.get(f"/history?{query}")
    assert page.status_code == 400 and message.replace("'", "&#39;") in page.get_data(as_text=True)
    assert client.get(f"/history.csv?{query}").status_code == 400


def test_history_sorts_by_p_covid_and_by_date(app, client, upload):
    a, b, c = upload(), upload(), upload()
    set_p_covid(app, {a["id"]: 0.5, b["id"]: 0.9, c["id"]: 0.1})

    def ids(sort: str) -> list[int]:
        return [item["id"] for item in client.get(f"/api/v1/predictions?sort={sort}").get_json()["items"]]

    assert ids("-probability") == [b["id"], a["id"], c["id"]]
    assert ids("probability") == [c["id"], a["id"], b["id"]]
    assert ids("-date") == [c["id"], b["id"], a["id"]]
    assert ids("date") == [a["id"], b["id"], c["id"]]
    html = client.get("/history?sort=-probability").get_data(as_text=True)
    assert html.index(f">#{b['id']}<") < html.index(f">#{a['id']}<") < html.index(f">#{c['id']}<")
    assert '<option selected value="-probability">' in html
    following = client.get("/api/v1/predictions?sort=-probability&reviewed=no&per_page=1").get_json()["next"]
    assert "sort=-probability" in following and "reviewed=no" in following


def test_upload_stores_the_ensembles_p_covid(app, upload):
    created = upload()
    with app.app_context():
        stored = db.session.get(Prediction, created["id"])
        assert stored.positive_probability == created["probabilities"]["covid"]


# -- one review per clinician, editable, with its history --------------------------------------------------


def test_second_web_review_edits_the_first_and_keeps_it(app, client, upload):
    prediction = upload()
    url = f"/predictions/{prediction['id']}/reviews"
    first = {"reading": "negative", "status": "preliminary", "comment": "first look"}
    assert client.post(url, data=first).status_code == 302
    form = client.get(f"/predictions/{prediction['id']}").get_data(as_text=True)
    assert '<input checked id="reading-3" name="reading" required type="radio" value="negative">' in form
    assert '<input checked id="status-0" name="status" required type="radio" value="preliminary">' in form
    assert "first look</textarea>" in form and "Edit your reading" in form
    response = client.post(url, data={"reading": "atypical", "status": "final", "comment": "second look"})
    assert response.status_code == 302
    html = client.get(response.location).get_data(as_text=True)
    assert "Reading updated" in html and "Atypical appearance for COVID-19 pneumonia" in html
    assert "1 earlier version" in html and "Negative for pneumonia (preliminary)" in html and "first look" in html
    with app.app_context():
        review = db.session.scalars(db.select(Review)).one()
        assert (review.reading, review.status, review.comment) == ("atypical", "final", "second look")
        assert [(e.reading, e.status, e.comment) for e in review.edits] == [("negative", "preliminary", "first look")]
        assert review.updated_at >= review.created_at
    api = client.get(f"/api/v1/predictions/{prediction['id']}").get_json()
    assert len(api["reviews"]) == 1 and api["reviews"][0]["edits"][0]["comment"] == "first look"
    assert api["latest_review"]["reading"] == "atypical" and api["latest_review"]["status"] == "final"


def test_each_clinician_has_their_own_review(app, client, upload):
    prediction = upload()
    add_user(app, "dana")
    dana = signed_in(app, "dana")
    url = f"/api/v1/predictions/{prediction['id']}/reviews"
    assert client.post(url, json={"reading": "negative", "status": "final"}).status_code == 201
    assert dana.post(url, json={"reading": "typical", "status": "final"}).status_code == 201
    form = dana.get(f"/predictions/{prediction['id']}").get_data(as_text=True)
    assert '<input checked id="reading-0" name="reading" required type="radio" value="typical">' in form
    reviews = client.get(f"/api/v1/predictions/{prediction['id']}").get_json()["reviews"]
    assert [(r["user"], r["reading"]) for r in reviews] == [("dana", "typical"), ("clinician", "negative")]


def test_one_clinicians_simultaneous_first_reviews_make_one_review(app, client, upload):
    """Two windows of one clinician save a first review at once: the second, which read no review of theirs
    while the first was being saved, is refused (409) by the unique constraint; never two reviews."""
    prediction = upload()
    url = f"/api/v1/predictions/{prediction['id']}/reviews"
    windows = [client, signed_in(app, "clinician")]
    first_inserted, second_done = threading.Event(), threading.Event()

    def hold_the_first(session, _context) -> None:  # between the first review's INSERT and its COMMIT
        if any(isinstance(row, Review) for row in session.new) and not first_inserted.is_set():
            first_inserted.set()
            # Time for the second to read and to try its INSERT, which then waits for this commit (a row lock
            # on PostgreSQL's unique index, the write lock on SQLite): it cannot finish first.
            assert not second_done.wait(1.0)

    def save(n: int) -> int:
        if n == 1:
            assert first_inserted.wait(10)
        try:
            return windows[n].post(url, json=READ | {"comment": f"window {n}"}).status_code
        finally:
            if n == 1:
                second_done.set()

    event.listen(Session, "after_flush", hold_the_first)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            statuses = list(pool.map(save, range(2)))
    finally:
        event.remove(Session, "after_flush", hold_the_first)
    assert statuses == [201, 409]
    with app.app_context():
        assert [r.comment for r in db.session.scalars(db.select(Review))] == ["window 0"]


@pytest.mark.parametrize(
    "decision, agreeing",
    [("covid", {"typical"}), ("indeterminate", {"indeterminate"}), ("normal", {"atypical", "negative", "other"})],
)
def test_agreement_is_computed_from_the_reading(decision, agreeing):
    assert {reading for reading in READINGS if agrees_with_model(reading, decision)} == agreeing


def test_review_api_creates_then_updates(app, client, upload):
    prediction = upload()
    url = f"/api/v1/predictions/{prediction['id']}/reviews"
    created = client.post(url, json={"reading": "negative", "status": "preliminary", "comment": " fine "})
    assert created.status_code == 201
    body = created.get_json()
    assert (body["reading"], body["status"], body["comment"]) == ("negative", "preliminary", "fine")
    assert body["reading_label"] == "Negative for pneumonia"
    assert body["agrees_with_model"] is (prediction["decision"] == "normal")
    assert body["user"] == "clinician" and body["edits"] == []
    updated = client.post(url, json={"reading": "indeterminate", "status": "final", "comment": None})
    assert updated.status_code == 200
    body = updated.get_json()
    assert (body["reading"], body["status"], body["comment"]) == ("indeterminate", "final", None)
    assert body["agrees_with_model"] is (prediction["decision"] == "indeterminate")
    assert [(e["reading"], e["status"], e["comment"]) for e in body["edits"]] == [("negative", "preliminary", "fine")]
    assert body["created"] == created.get_json()["created"]
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Review.id))) == 1
        assert db.session.scalar(db.select(db.func.count(ReviewEdit.id))) == 1


@pytest.mark.parametrize(
    "body, status, message",
    [
        ("not json", 400, "Send a JSON object"),
        ([1, 2], 400, "Send a JSON object"),
        ({}, 400, "'reading' must be a string"),
        ({"reading": ["typical"], "status": "final"}, 400, "'reading' must be a string"),
        ({"reading": {"a": 1}, "status": "final"}, 400, "'reading' must be a string"),
        ({"reading": "typical"}, 400, "'status' must be a string: preliminary or final."),
        ({"reading": "typical", "status": True}, 400, "'status' must be a string"),
        ({"reading": "typical", "status": "final", "agree": True}, 400, "Unknown field(s): agree"),
        ({"reading": "typical", "status": "final", "comment": 3}, 400, "'comment' must be a string or null."),
        ({"reading": "typical", "status": "final", "comment": ["x"]}, 400, "'comment' must be a string or null."),
        ({"reading": "typical", "status": "final", "comment": "x" * 2001}, 422, "longer than 2000"),
        ({"reading": "normal", "status": "final"}, 422, "Unknown reading 'normal'"),
        ({"reading": "typical", "status": "done"}, 422, "Unknown status 'done'"),
        ({"reading": "other", "status": "final"}, 422, "Name the other finding in the comment."),
        ({"reading": "other", "status": "final", "comment": "  "}, 422, "Name the other finding in the comment."),
    ],
)
def test_review_api_refuses_bad_input(client, upload, body, status, message):
    prediction = upload()
    url = f"/api/v1/predictions/{prediction['id']}/reviews"
    if isinstance(body, str):
        response = client.post(url, data=body, content_type="application/json")
    else:
        response = client.post(url, json=body)
    assert response.status_code == status
    assert message in response.get_json()["error"]
    assert client.get(f"/api/v1/predictions/{prediction['id']}").get_json()["reviews"] == []


def test_review_api_of_a_missing_prediction_is_404(client):
    response = client.post("/api/v1/predictions/999/reviews", json={"reading": "typical", "status": "final"})
    assert response.status_code == 404 and "error" in response.get_json()


def test_openapi_describes_the_worklist_and_reviews(client):
    document = client.get("/api/v1/openapi.json").get_json()
    names = {p["name"] for p in document["paths"]["/predictions"]["get"]["parameters"]}
    assert {"reviewed", "reviewer", "sort", "decision"} <= names
    review = document["paths"]["/predictions/{id}/reviews"]["post"]
    assert {"200", "201", "400", "401", "404", "409", "422"} == set(review["responses"])
    review_input = document["components"]["schemas"]["ReviewInput"]
    assert review_input["required"] == ["reading", "status"]
    assert review_input["properties"]["reading"]["enum"] == [
        "typical",
        "indeterminate",
        "atypical",
        "negative",
        "other",
    ]
    assert review_input["properties"]["status"]["enum"] == ["preliminary", "final"]
    assert "edits" in document["components"]["schemas"]["Review"]["properties"]
    prediction = document["components"]["schemas"]["Prediction"]["properties"]
    assert {"latest_review", "suggested_reference", "reviews"} <= set(prediction)
    assert set(document["paths"]["/monitoring"]["get"]["responses"]) == {"200", "400", "401"}
    assert set(document["paths"]["/predictions/{id}/reference"]["post"]["responses"]) == {
        "200",
        "400",
        "401",
        "404",
        "409",
    }


# -- the migration -----------------------------------------------------------------------------------------


@pytest.mark.databases("sqlite")  # its old rows are written in SQLite's SQL; tests/test_migrations.py runs all
def test_migration_merges_duplicate_reviews_and_backfills_p_covid(make_app, tmp_path):
    app = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'old.sqlite'}")
    with app.app_context():
        flask_migrate.upgrade(directory=str(MIGRATIONS), revision="c5d8e1f40b22")
        run = db.session.execute
        run(
            text(
                "INSERT INTO users (id, username, password_hash, role, active, must_change_password, session_token, "
                "created_at) VALUES (1, 'ann', 'x', 'clinician', 1, 0, 't1', '2026-01-01 00:00:00')"
            )
        )
        for prediction_id, probabilities in ((1, {"covid": 0.8, "normal": 0.2}), (2, {"normal": 1.0})):
            run(
                text(
                    "INSERT INTO predictions (id, created_at, filename, sha256, image_path, overlay_path, "
                    "thumbnail_path, label, decision, probabilities, cnn_probabilities, model_version, elapsed_ms, "
                    "ood_score) VALUES (:id, '2026-01-02 00:00:00', 'a.png', 'h', 'a.png', 'b.jpg', 'c.jpg', "
                    "'covid', 'covid', :p, :p, 'v1', 1.0, 0.5)"
                ),
                {"id": prediction_id, "p": json.dumps(probabilities)},
            )
        reviews = [  # ann reviewed #1 three times; a review from before accounts has no user
            (1, 1, "2026-01-03 00:00:00", 1, "covid", "first"),
            (2, 1, "2026-01-05 00:00:00", 0, "normal", "third"),
            (3, 1, "2026-01-04 00:00:00", 1, "covid", "second"),
            (4, None, "2026-01-01 00:00:00", 1, "covid", None),
            (5, None, "2026-01-01 00:00:00", 0, "normal", None),
            (6, None, "2026-01-01 00:00:00", 0, "viral_pneumonia", "odd"),  # a class of a 3-class model
        ]
        for review_id, user_id, created, agrees, label, comment in reviews:
            run(
                text(
                    "INSERT INTO reviews (id, prediction_id, created_at, agrees, correct_class, comment, user_id) "
                    "VALUES (:id, 1, :c, :a, :l, :m, :u)"
                ),
                {"id": review_id, "c": created, "a": agrees, "l": label, "m": comment, "u": user_id},
            )
        db.session.commit()
        flask_migrate.upgrade(directory=str(MIGRATIONS))
        db.session.expire_all()
        assert db.session.get(Prediction, 1).positive_probability == 0.8
        assert db.session.get(Prediction, 2).positive_probability is None
        kept = db.session.scalars(db.select(Review).order_by(Review.id)).all()
        assert [r.id for r in kept] == [2, 4, 5, 6]
        ann = kept[0]
        assert (ann.comment, ann.created_at, ann.updated_at) == ("third", datetime(2026, 1, 3), datetime(2026, 1, 5))
        # Old reviews became readings (revision i23a): covid typical, normal negative, another class "other"
        # with the class kept in the comment; all of them final. Their earlier versions too.
        assert [(r.reading, r.status, r.comment) for r in kept] == [
            ("negative", "final", "third"),
            ("typical", "final", None),
            ("negative", "final", None),
            ("other", "final", "Earlier review: correct class viral_pneumonia. odd"),
        ]
        assert [(e.comment, e.saved_at, e.reading, e.status) for e in ann.edits] == [
            ("second", datetime(2026, 1, 4), "typical", "final"),
            ("first", datetime(2026, 1, 3), "typical", "final"),
        ]
        assert db.session.get(Prediction, 1).indeterminate_reasons is None  # not recorded for older predictions
        with pytest.raises(Exception, match="UNIQUE"):
            run(
                text(
                    "INSERT INTO reviews (prediction_id, created_at, updated_at, reading, status, user_id) "
                    "VALUES (1, '2026-02-01', '2026-02-01', 'typical', 'final', 1)"
                )
            )
        db.session.rollback()
        flask_migrate.downgrade(directory=str(MIGRATIONS), revision="c5d8e1f40b22")
        restored = run(
            text("SELECT comment, agrees, correct_class FROM reviews WHERE user_id = 1 ORDER BY created_at")
        ).all()
        assert [tuple(row) for row in restored] == [
            ("first", 1, "covid"),
            ("second", 1, "covid"),
            ("third", 0, "normal"),
        ]
        db.engine.dispose()
