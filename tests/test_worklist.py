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

# The same tests on PostgreSQL (the several-hosts deployment) as on SQLite: see `databases` in tests/conftest.py.
pytestmark = pytest.mark.databases("sqlite", "postgres")


def other_class(bundle, prediction: dict) -> str:
    return next(c for c in bundle.classes if c != prediction["class"])


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
    assert client.post(f"/api/v1/predictions/{first['id']}/reviews", json={"agree": True}).status_code == 201
    assert dana.post(f"/api/v1/predictions/{second['id']}/reviews", json={"agree": True}).status_code == 201

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
    assert item["latest_review"]["user"] == "dana" and item["latest_review"]["agrees"] is True


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


def test_second_web_review_edits_the_first_and_keeps_it(app, client, upload, bundle):
    prediction = upload()
    url = f"/predictions/{prediction['id']}/reviews"
    assert client.post(url, data={"verdict": "agree", "comment": "first look"}).status_code == 302
    form = client.get(f"/predictions/{prediction['id']}").get_data(as_text=True)
    assert '<input checked id="verdict-0" name="verdict" required type="radio" value="agree">' in form
    assert "first look</textarea>" in form and "Edit your review" in form
    other = other_class(bundle, prediction)
    response = client.post(url, data={"verdict": "disagree", "correct_class": other, "comment": "second look"})
    assert response.status_code == 302
    html = client.get(response.location).get_data(as_text=True)
    assert "Review updated" in html and f"correct class: {other}" in html
    assert "1 earlier version" in html and "Agreed" in html and "first look" in html
    with app.app_context():
        review = db.session.scalars(db.select(Review)).one()
        assert (review.agrees, review.correct_class, review.comment) == (False, other, "second look")
        assert [(e.agrees, e.correct_class, e.comment) for e in review.edits] == [
            (True, prediction["class"], "first look")
        ]
        assert review.updated_at >= review.created_at
    api = client.get(f"/api/v1/predictions/{prediction['id']}").get_json()
    assert len(api["reviews"]) == 1 and api["reviews"][0]["edits"][0]["comment"] == "first look"
    assert api["latest_review"]["correct_class"] == other


def test_each_clinician_has_their_own_review(app, client, upload, bundle):
    prediction = upload()
    add_user(app, "dana")
    dana = signed_in(app, "dana")
    url = f"/api/v1/predictions/{prediction['id']}/reviews"
    assert client.post(url, json={"agree": True}).status_code == 201
    other = other_class(bundle, prediction)
    assert dana.post(url, json={"agree": False, "correct_class": other}).status_code == 201
    form = dana.get(f"/predictions/{prediction['id']}").get_data(as_text=True)
    assert f'<option selected value="{other}">' in form
    reviews = client.get(f"/api/v1/predictions/{prediction['id']}").get_json()["reviews"]
    assert [(r["user"], r["agrees"]) for r in reviews] == [("dana", False), ("clinician", True)]


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
            return windows[n].post(url, json={"agree": True, "comment": f"window {n}"}).status_code
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


def test_review_api_creates_then_updates(app, client, upload, bundle):
    prediction = upload()
    url = f"/api/v1/predictions/{prediction['id']}/reviews"
    created = client.post(url, json={"agree": True, "comment": " fine "})
    assert created.status_code == 201
    body = created.get_json()
    assert body["agrees"] is True and body["correct_class"] == prediction["class"] and body["comment"] == "fine"
    assert body["user"] == "clinician" and body["edits"] == []
    other = other_class(bundle, prediction)
    updated = client.post(url, json={"agree": False, "correct_class": other, "comment": None})
    assert updated.status_code == 200
    body = updated.get_json()
    assert body["correct_class"] == other and body["comment"] is None
    assert [(e["agrees"], e["comment"]) for e in body["edits"]] == [(True, "fine")]
    assert body["created"] == created.get_json()["created"]
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Review.id))) == 1
        assert db.session.scalar(db.select(db.func.count(ReviewEdit.id))) == 1


@pytest.mark.parametrize(
    "body, status, message",
    [
        ("not json", 400, "Send a JSON object"),
        ([1, 2], 400, "Send a JSON object"),
        ({}, 400, "'agree' must be true or false."),
        ({"agree": "yes"}, 400, "'agree' must be true or false."),
        ({"agree": True, "agrees": True}, 400, "Unknown field(s): agrees"),
        ({"agree": False, "correct_class": 3}, 400, "'correct_class' must be a string or null."),
        ({"agree": True, "comment": "x" * 2001}, 400, "longer than 2000"),
        ({"agree": False}, 422, "Choose the correct class."),
        ({"agree": False, "correct_class": "flu"}, 422, "Unknown class 'flu'"),
        ({"agree": False, "correct_class": "PREDICTED"}, 422, "must differ from the predicted one"),
        ({"agree": True, "correct_class": "OTHER"}, 422, "To agree, the correct class is the predicted one"),
    ],
)
def test_review_api_refuses_bad_input(client, upload, bundle, body, status, message):
    prediction = upload()
    if isinstance(body, dict) and body.get("correct_class") in ("PREDICTED", "OTHER"):
        body = {
            **body,
            "correct_class": prediction["class"]
            if body["correct_class"] == "PREDICTED"
            else other_class(bundle, prediction),
        }
    url = f"/api/v1/predictions/{prediction['id']}/reviews"
    if isinstance(body, str):
        response = client.post(url, data=body, content_type="application/json")
    else:
        response = client.post(url, json=body)
    assert response.status_code == status
    assert message in response.get_json()["error"]
    assert client.get(f"/api/v1/predictions/{prediction['id']}").get_json()["reviews"] == []


def test_review_api_of_a_missing_prediction_is_404(client):
    response = client.post("/api/v1/predictions/999/reviews", json={"agree": True})
    assert response.status_code == 404 and "error" in response.get_json()


def test_openapi_describes_the_worklist_and_reviews(client):
    document = client.get("/api/v1/openapi.json").get_json()
    names = {p["name"] for p in document["paths"]["/predictions"]["get"]["parameters"]}
    assert {"reviewed", "reviewer", "sort", "decision"} <= names
    review = document["paths"]["/predictions/{id}/reviews"]["post"]
    assert {"200", "201", "400", "401", "404", "409", "422"} == set(review["responses"])
    assert document["components"]["schemas"]["ReviewInput"]["required"] == ["agree"]
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
        assert [r.id for r in kept] == [2, 4, 5]
        ann = kept[0]
        assert (ann.comment, ann.created_at, ann.updated_at) == ("third", datetime(2026, 1, 3), datetime(2026, 1, 5))
        assert [(e.comment, e.saved_at) for e in ann.edits] == [
            ("second", datetime(2026, 1, 4)),
            ("first", datetime(2026, 1, 3)),
        ]
        with pytest.raises(Exception, match="UNIQUE"):
            run(
                text(
                    "INSERT INTO reviews (prediction_id, created_at, updated_at, agrees, correct_class, user_id) "
                    "VALUES (1, '2026-02-01', '2026-02-01', 1, 'covid', 1)"
                )
            )
        db.session.rollback()
        flask_migrate.downgrade(directory=str(MIGRATIONS), revision="c5d8e1f40b22")
        restored = run(text("SELECT comment FROM reviews WHERE user_id = 1 ORDER BY created_at")).scalars().all()
        assert restored == ["first", "second", "third"]
        db.engine.dispose()
