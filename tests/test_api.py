"""The JSON API, its OpenAPI description and the health check."""

from __future__ import annotations

import io

import numpy as np
import pytest
from sqlalchemy.exc import OperationalError

from tests.accounts import clinician_client, token_for
from tests.helpers import dicom_bytes, png_bytes
from webapp.db import AuditEvent, db
from webapp.model_service import model_service


def test_create_read_and_fetch_images(client, chest_png, bundle):
    response = client.post(
        "/api/v1/predictions", data={"file": (io.BytesIO(chest_png), "c.png"), "reference": "R-9", "note": "n"}
    )
    assert response.status_code == 201
    created = response.get_json()
    assert response.headers["Location"].endswith(f"/api/v1/predictions/{created['id']}")
    assert created["class"] in bundle.classes
    assert set(created["probabilities"]) == set(created["cnn_probabilities"]) == set(bundle.classes)
    assert sum(created["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
    assert created["threshold"] == pytest.approx(bundle.threshold)
    assert 0 <= created["ood_score"] <= 1
    assert created["model_version"] == bundle.version
    assert created["reference"] == "R-9" and created["note"] == "n" and created["reviews"] == []
    for key in ("image_url", "overlay_url", "thumbnail_url", "url"):
        fetched = client.get(created[key])
        assert fetched.status_code == 200, key
    assert created["image_url"].endswith("/image.png") and created["overlay_url"].endswith("/overlay.jpg")
    assert client.get(created["image_url"]).data.startswith(b"\x89PNG")
    overlay = client.get(created["overlay_url"])  # rendered from the film and the stored heatmap
    assert overlay.mimetype == "image/jpeg" and overlay.data.startswith(b"\xff\xd8")
    read = client.get(f"/api/v1/predictions/{created['id']}")
    assert created.pop("duplicate") is False  # only in the answer to an upload
    assert read.status_code == 200 and read.get_json() == created
    # The human label beside the kept value; "normal" is never shown as such.
    labels = {"covid": "COVID-19 features", "indeterminate": "Indeterminate — read it yourself"}
    assert created["decision_label"] == labels.get(created["decision"], "No COVID-19 features")
    if created["decision"] == "indeterminate":
        assert created["indeterminate_reasons"] and created["indeterminate_reason_text"]
    else:
        assert created["indeterminate_reasons"] == [] and created["indeterminate_reason_text"] is None


def test_the_same_file_again_links_to_its_prediction(app, client, chest_png):
    """A file stored before is answered with its existing prediction (200), nothing stored; force=1 stores it."""
    from webapp.db import Prediction

    first = client.post("/api/v1/predictions", data={"file": (io.BytesIO(chest_png), "a.png"), "reference": "R1"})
    assert first.status_code == 201
    again = client.post("/api/v1/predictions", data={"file": (io.BytesIO(chest_png), "renamed.png")})
    assert again.status_code == 200
    body = again.get_json()
    assert body["id"] == first.get_json()["id"] and body["duplicate"] is True and body["filename"] == "a.png"
    assert again.headers["Location"].endswith(f"/api/v1/predictions/{body['id']}")
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Prediction.id))) == 1
    forced = client.post("/api/v1/predictions?force=1", data={"file": (io.BytesIO(chest_png), "b.png")})
    assert forced.status_code == 201 and forced.get_json()["id"] != body["id"]
    assert forced.get_json()["duplicate"] is False
    # A later duplicate links to the newest of them.
    latest = client.post("/api/v1/predictions?force=0", data={"file": (io.BytesIO(chest_png), "c.png")})
    assert latest.status_code == 200 and latest.get_json()["id"] == forced.get_json()["id"]
    refused = client.post("/api/v1/predictions?force=yes", data={"file": (io.BytesIO(chest_png), "d.png")})
    assert refused.status_code == 400 and "'force' must be 1" in refused.get_json()["error"]
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Prediction.id))) == 2


def test_an_upload_writes_its_rows_and_reads_nothing_back(app, client, chest_png):
    """The answer comes from the objects just stored: no row is read again after the commit."""
    from sqlalchemy import event

    statements: list[str] = []
    with app.app_context():
        engine = db.engine

    def listener(_conn, _cursor, sql, *_):
        return statements.append(" ".join(sql.split()).upper())

    event.listen(engine, "before_cursor_execute", listener)
    try:
        response = client.post("/api/v1/predictions", data={"file": (io.BytesIO(chest_png), "c.png")})
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert response.status_code == 201 and response.get_json()["reviews"] == []
    assert [sql.split(" (")[0] for sql in statements if sql.startswith("INSERT")] == [
        "INSERT INTO PREDICTIONS",
        "INSERT INTO AUDIT_EVENTS",
    ]
    # One look-up before the analysis (is this file stored already?), and nothing read back after the commit.
    reads = [sql for sql in statements if sql.startswith("SELECT") and ("PREDICTIONS" in sql or "REVIEWS" in sql)]
    assert len(reads) == 1 and "WHERE PREDICTIONS.SHA256 = " in reads[0]


def test_list_is_paginated(make_app, chest_png):
    client = clinician_client(make_app(PER_PAGE=2))
    ids = [
        client.post("/api/v1/predictions?force=1", data={"file": (io.BytesIO(chest_png), "x.png")}).get_json()["id"]
        for _ in range(3)
    ]
    first = client.get("/api/v1/predictions").get_json()
    assert [item["id"] for item in first["items"]] == ids[:0:-1]
    assert (first["page"], first["pages"], first["total"], first["prev"]) == (1, 2, 3, None)
    second = client.get(first["next"]).get_json()
    assert [item["id"] for item in second["items"]] == [ids[0]] and second["next"] is None
    assert client.get("/api/v1/predictions?per_page=3").get_json()["pages"] == 1


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        ({}, 400, "multipart field 'file'"),
        ({"file": (io.BytesIO(b"%PDF-1.4 not an image"), "a.pdf")}, 415, "not accepted"),
        ({"file": (io.BytesIO(b"plain text"), "a.txt")}, 415, "not an image the service can read"),
        (
            {"file": (io.BytesIO(png_bytes(np.zeros((300, 300), np.uint8))[:100]), "cut.png")},
            400,
            "truncated or corrupt",
        ),
        ({"file": (io.BytesIO(png_bytes(np.full((256, 256), 90, np.uint8))), "flat.png")}, 422, "almost uniform"),
        ({"file": (io.BytesIO(png_bytes(np.zeros((200, 800), np.uint8))), "wide.png")}, 422, "aspect ratio"),
        ({"file": (io.BytesIO(dicom_bytes(np.zeros((256, 256), np.uint8), modality="CT")), "ct.dcm")}, 422, "CT"),
    ],
)
def test_create_errors(client, data, status, message):
    response = client.post("/api/v1/predictions", data=data)
    assert response.status_code == status
    assert response.is_json and message in response.get_json()["error"]


def test_create_too_large(make_app, chest_png):
    client = clinician_client(make_app(MAX_CONTENT_LENGTH=4096))
    response = client.post("/api/v1/predictions", data={"file": (io.BytesIO(chest_png + b"\0" * 8192), "big.png")})
    assert response.status_code == 413
    assert "larger than" in response.get_json()["error"]


def test_report_pdf_with_an_api_token_is_audited(app, upload):
    prediction = upload()
    script = app.test_client()  # no session: the token alone
    headers = {"Authorization": f"Bearer {token_for(app, 'clinician', 'record system')}"}
    response = script.get(f"/api/v1/predictions/{prediction['id']}/report.pdf", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    assert response.mimetype == "application/pdf" and response.data.startswith(b"%PDF")
    assert response.headers["Content-Disposition"] == f'attachment; filename="cxr-prediction-{prediction["id"]}.pdf"'
    with app.app_context():
        exports = db.session.scalars(db.select(AuditEvent).where(AuditEvent.action == "export")).all()
        assert [(e.username, e.target, e.detail) for e in exports] == [
            ("clinician", f"prediction:{prediction['id']}", "report.pdf via the API")
        ]
    missing = script.get("/api/v1/predictions/999999/report.pdf", headers=headers)
    assert missing.status_code == 404 and missing.get_json() == {"error": "Nothing was found at this address."}
    anonymous = script.get(f"/api/v1/predictions/{prediction['id']}/report.pdf")
    assert anonymous.status_code == 401
    assert anonymous.get_json() == {"error": "Sign in, or send an API token as 'Authorization: Bearer <token>'."}
    revoked = script.get(f"/api/v1/predictions/{prediction['id']}/report.pdf", headers={"Authorization": "Bearer x"})
    assert revoked.status_code == 401 and "not valid" in revoked.get_json()["error"]


def test_json_errors(client):
    for url in ("/api/v1/predictions/12345", "/api/v1/nothing"):
        response = client.get(url)
        assert response.status_code == 404 and response.get_json() == {"error": "Nothing was found at this address."}
    response = client.delete("/api/v1/predictions")
    assert response.status_code == 405 and "DELETE" in response.get_json()["error"]
    assert client.put("/api/v1/predictions/1").status_code == 405


def test_openapi_describes_every_api_route(client, app, bundle):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"].startswith("3.")
    described = {(path, method.upper()) for path, item in document["paths"].items() for method in item}
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("api."):
            path = rule.rule.removeprefix("/api/v1").replace("<int:prediction_id>", "{id}")
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                assert (path, method) in described
    prediction = document["components"]["schemas"]["Prediction"]
    assert prediction["properties"]["class"]["enum"] == bundle.classes


def test_healthz(client, bundle):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["model"] == {"loaded": True, "version": bundle.version, "error": None}
    assert body["database"] == {"reachable": True}
    assert body["storage"]["ok"] is True and body["storage"]["writable"] is True and body["storage"]["free_bytes"] > 0


def test_healthz_database_unreachable(client, monkeypatch):
    def fail(*args, **kwargs):
        raise OperationalError("SELECT 1", {}, Exception("unable to open database file"))

    monkeypatch.setattr(db.session, "execute", fail)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["database"] == {"reachable": False}


def test_healthz_model_not_loaded(app, client, tmp_path):
    model_service.unload(app)
    app.config["MODEL_DIR"] = tmp_path / "no-model"  # nothing to load it from again
    response = client.get("/healthz")
    assert response.status_code == 503
    model = response.get_json()["model"]
    assert (model["loaded"], model["version"]) == (False, None) and "lacks cnn.keras" in model["error"]


def test_unknown_query_parameters_are_named(client, upload):
    upload()
    response = client.get("/api/v1/predictions?clas=covid&page=1")
    assert response.status_code == 400
    assert response.get_json()["error"].startswith("Unknown query parameter: clas. Known: class, ")
    assert client.get("/api/v1/predictions?class=covid&per_page=5&page=1").status_code == 200


def test_a_retry_with_the_same_idempotency_key_stores_once(app, client, chest_png):
    def post(key: str, name: str = "chest.png", query: str = ""):
        return client.post(
            f"/api/v1/predictions{query}",
            data={"file": (io.BytesIO(chest_png), name)},
            headers={"Idempotency-Key": key},
        )

    first = post("4f1c-retry-1")
    assert first.status_code == 201
    again = post("4f1c-retry-1", "renamed.png")
    assert again.status_code == 200 and again.get_json()["id"] == first.get_json()["id"]
    assert again.headers["Location"] == first.headers["Location"]
    # Another key is another upload (forced: the same film again would link to the first).
    assert post("4f1c-retry-2", query="?force=1").status_code == 201
    assert post("4f1c-retry-2", query="?force=1").status_code == 200  # its retry, forced too, stores nothing
    other = clinician_client(app, "colleague")  # keys are per user
    assert (
        other.post(
            "/api/v1/predictions?force=1",
            data={"file": (io.BytesIO(chest_png), "c.png")},
            headers={"Idempotency-Key": "4f1c-retry-1"},
        ).status_code
        == 201
    )
    assert client.get("/api/v1/predictions").get_json()["total"] == 3
    bad = post("has space")
    assert bad.status_code == 400 and "Idempotency-Key" in bad.get_json()["error"]
