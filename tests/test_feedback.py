"""Feedback from use: the monitoring page and API, OOD refusals counted per model version, DICOM identifiers
offered (never stored unasked) as the reference, and `export-reviewed`, whose export trains and evaluates
as it is (the round trip upload → review → export → train → evaluate)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from tests.accounts import add_user, clinician_client, signed_in
from tests.helpers import SHARED_IMAGES, csv_rows, dicom_bytes, gray_pixels, missing, png_bytes, shared_manifest
from webapp.db import AuditEvent, Prediction, UserSession, db

FLAT = png_bytes(np.full((256, 256), 200, np.uint8))  # decodes, but the gate refuses it


def refuse(client) -> None:
    response = client.post("/api/v1/predictions", data={"file": (io.BytesIO(FLAT), "flat.png")})
    assert response.status_code == 422


def review(client, prediction: dict, reading: str, status: str = "final") -> None:
    body = {"reading": reading, "status": status}
    assert client.post(f"/api/v1/predictions/{prediction['id']}/reviews", json=body).status_code == 201


def agreeing(decision: str) -> str:
    """A reading that agrees with the model's decision."""
    return {"covid": "typical", "indeterminate": "indeterminate"}.get(decision, "negative")


def disagreeing(decision: str) -> str:
    return "negative" if decision == "covid" else "typical"


# -- monitoring --------------------------------------------------------------------------------------------


def test_monitoring_counts_per_model_version_and_month(app, client, upload, bundle):
    agreed, disagreed, unreviewed = upload(), upload(), upload()
    review(client, agreed, agreeing(agreed["decision"]))
    other = disagreeing(disagreed["decision"])
    review(client, disagreed, other, "preliminary")
    refuse(client)
    response = client.get("/api/v1/monitoring")
    assert response.status_code == 200
    body = response.get_json()
    assert {"clinician_label", "agreement_rate", "confusion", "ood_refusals"} <= set(body["definitions"])
    [period] = body["periods"]
    month = agreed["created"][:7]
    assert (period["model_version"], period["month"]) == (bundle.version, month)
    assert (period["predictions"], period["reviewed"], period["agreed"], period["ood_refusals"]) == (3, 2, 1, 1)
    assert period["final"] == 1  # the other reading is preliminary
    assert period["reviewed_share"] == pytest.approx(2 / 3) and period["agreement_rate"] == 0.5
    indeterminate = sum(p["decision"] == "indeterminate" for p in (agreed, disagreed, unreviewed))
    assert period["indeterminate"] == indeterminate and period["indeterminate_rate"] == pytest.approx(indeterminate / 3)
    decision = agreed["decision"]  # one film: the same decision each time
    assert period["confusion"] == {decision: {agreeing(decision): 1, other: 1}}

    page = client.get("/monitoring")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert f"<code>{bundle.version}</code>" in html and "Model decision against the clinician's reading" in html
    assert 'href="/monitoring" aria-current="page">Monitoring</a>' in html
    assert '<img src="/monitoring.svg"' in html
    plot = client.get("/monitoring.svg")
    assert plot.status_code == 200 and plot.mimetype == "image/svg+xml"
    svg = plot.get_data(as_text=True)
    assert svg.startswith("<svg") and f">{month}</text>" in svg
    # Its own white paper and dark ink, whatever the page's theme; each legend square is labelled.
    assert 'fill="#1d2733">' in svg.split("<rect", 1)[0] and '<rect x="0" y="0"' in svg and 'fill="#ffffff"/>' in svg
    for name in ("Reviewed share", "Agreement rate", "Indeterminate rate"):
        assert f'class="legend">{name}</text>' in svg


def test_monitoring_uses_each_predictions_latest_review(app, client, upload, bundle):
    from tests.accounts import add_user, signed_in

    prediction = upload()
    other = disagreeing(prediction["decision"])
    review(client, prediction, agreeing(prediction["decision"]))
    add_user(app, "dana")
    review(signed_in(app, "dana"), prediction, other)  # saved later: the clinician label
    [period] = client.get("/api/v1/monitoring").get_json()["periods"]
    assert (period["reviewed"], period["agreed"]) == (1, 0)
    assert period["confusion"] == {prediction["decision"]: {other: 1}}


def test_monitoring_dates_and_bad_dates(client, upload):
    upload()
    assert client.get("/api/v1/monitoring?date_to=2000-01-01").get_json()["periods"] == []
    page = client.get("/monitoring?date_to=2000-01-01")
    assert page.status_code == 200 and "No predictions or refusals in these dates" in page.get_data(as_text=True)
    bad = client.get("/api/v1/monitoring?date_from=2026-02-01&date_to=2026-01-01")
    assert bad.status_code == 400 and "The end date is before the start date." in bad.get_json()["error"]
    assert client.get("/monitoring?date_from=yesterday").status_code == 400
    assert client.get("/monitoring.svg?date_from=yesterday").status_code == 400


def test_monitoring_needs_a_user(anon):
    assert anon.get("/api/v1/monitoring").status_code == 401
    assert anon.get("/monitoring").status_code == 302


def test_refusals_are_audited_with_the_model_version(app, client, bundle):
    refuse(client)
    with app.app_context():
        event = db.session.scalars(db.select(AuditEvent).where(AuditEvent.action == "upload_refused")).one()
        assert (event.username, event.target, event.detail) == ("clinician", f"model:{bundle.version}", "via api")
        assert db.session.scalar(db.select(db.func.count(Prediction.id))) == 0


# -- DICOM identifiers as the reference --------------------------------------------------------------------


@pytest.fixture
def tagged_dicom(chest_png) -> bytes:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(gray_pixels(chest_png))))
    ds.PatientID, ds.AccessionNumber, ds.PatientName = "PID-77", "ACC-5", "Doe^Jane"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_api_offers_dicom_identifiers_and_stores_only_the_confirmed_one(app, client, tagged_dicom, caplog):
    response = client.post("/api/v1/predictions", data={"file": (io.BytesIO(tagged_dicom), "study.dcm")})
    assert response.status_code == 201, response.get_json()
    created = response.get_json()
    assert created["suggested_reference"] == {"patient_id": "PID-77", "accession_number": "ACC-5"}
    assert created["reference"] is None
    assert "suggested_reference" not in client.get(f"/api/v1/predictions/{created['id']}").get_json()
    url = f"/api/v1/predictions/{created['id']}/reference"
    assert client.post(url, json={"reference": 5}).status_code == 400
    assert client.post(url, json={"reference": "  "}).status_code == 400
    confirmed = client.post(url, json={"reference": "ACC-5"})
    assert confirmed.status_code == 200 and confirmed.get_json()["reference"] == "ACC-5"
    again = client.post(url, json={"reference": "PID-77"})
    assert again.status_code == 409 and "has a reference already" in again.get_json()["error"]
    with app.app_context():
        events = db.session.scalars(db.select(AuditEvent)).all()
        assert not any("PID-77" in (e.detail or "") + (e.target or "") for e in events)
        assert [e.detail for e in events if e.action == "reference_set"] == ["confirmed after upload"]
    assert "PID-77" not in caplog.text and "Doe" not in caplog.text
    given = client.post(
        "/api/v1/predictions?force=1", data={"file": (io.BytesIO(tagged_dicom), "s.dcm"), "reference": "R1"}
    )
    assert given.status_code == 201 and "suggested_reference" not in given.get_json()


def test_upload_page_offers_dicom_identifiers_then_saves_the_choice(app, client, tagged_dicom, chest_png):
    response = client.post("/", data={"files": [(io.BytesIO(tagged_dicom), "study.dcm")]})
    with app.app_context():
        record = db.session.scalars(db.select(Prediction)).one()
        assert record.reference is None
    assert response.status_code == 303 and response.location == f"/predictions/{record.id}"  # Post/Redirect/Get
    html = client.get(response.location).get_data(as_text=True)
    assert "Use PatientID PID-77" in html and "Use Accession ACC-5" in html and "Doe" not in html
    colleague = clinician_client(app, "colleague").get(response.location)  # the offer is the uploader's only
    assert colleague.status_code == 200 and "suggested-reference" not in colleague.get_data(as_text=True)
    saved = client.post(f"/predictions/{record.id}/reference", data={"reference": "PID-77"})
    assert saved.status_code == 302 and saved.location.endswith(f"/predictions/{record.id}")
    page = client.get(saved.location).get_data(as_text=True)
    assert "<dd>PID-77</dd>" in page and "Use Accession" not in page  # the offer ends with the choice
    assert client.post(f"/predictions/{record.id}/reference", data={"reference": "ACC-5"}).status_code == 409
    assert client.post(f"/predictions/{record.id}/reference", data={}).status_code == 400
    assert client.post("/predictions/999/reference", data={"reference": "x"}).status_code == 404
    plain = client.post("/", data={"files": [(io.BytesIO(chest_png), "a.png")]})
    assert plain.status_code == 303
    assert "suggested-reference" not in client.get(plain.location).get_data(as_text=True)  # nothing to offer


# -- export-reviewed and the retraining loop ---------------------------------------------------------------


def another_film(png: bytes, seed: int) -> bytes:
    """The same film with one pixel changed: other bytes (sha256) that the gate judges alike."""
    pixels = gray_pixels(png).copy()
    pixels[seed, seed] ^= 1
    return png_bytes(pixels)


def test_export_reviewed_writes_films_and_manifest(app, client, upload, runner, tmp_path, chest_png):
    first, second, unreviewed = upload(reference="P-1"), upload(another_film(chest_png, 1)), upload()
    preliminary, indeterminate, atypical = (upload(another_film(chest_png, k)) for k in (2, 3, 4))
    review(client, first, "typical")
    review(client, second, "negative")
    client.post(
        f"/api/v1/predictions/{second['id']}/reviews",
        json={"reading": "other", "status": "final", "comment": "effusion"},
    )
    review(client, preliminary, "typical", "preliminary")
    review(client, indeterminate, "indeterminate")
    review(client, atypical, "atypical")
    out = tmp_path / "export"
    result = runner.invoke(args=["export-reviewed", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Wrote 3 reviewed film(s)" in result.output
    assert "Left out 2 reviewed film(s) whose latest reading is preliminary or indeterminate." in result.output
    rows = csv_rows(out / "manifest.csv")
    assert list(rows[0]) == ["file", "label", "patient_id", "source"]
    # Labels from the latest reading: typical covid, another finding and atypical "other" (trained as non-COVID).
    assert [(r["label"], r["patient_id"], r["source"]) for r in rows] == [
        ("covid", "P-1", "local"),
        ("other", f"prediction:{second['id']}", "local"),
        ("other", f"prediction:{atypical['id']}", "local"),
    ]
    stored = Path(app.config["UPLOAD_FOLDER"])
    with app.app_context():
        image_path = db.session.get(Prediction, first["id"]).image_path
    assert (out / rows[0]["file"]).read_bytes() == (stored / image_path).read_bytes()
    assert unreviewed["id"] not in {int(Path(r["file"]).stem) for r in rows}

    refused = runner.invoke(args=["export-reviewed", "--out", str(out)])
    assert refused.exit_code == 1 and "is not empty" in refused.output
    assert runner.invoke(args=["export-reviewed", "--out", str(out), "--force"]).exit_code == 0
    later = runner.invoke(args=["export-reviewed", "--out", str(tmp_path / "later"), "--since", "2999-01-01"])
    assert later.exit_code == 0 and "Wrote 0 reviewed film(s)" in later.output
    bad = runner.invoke(args=["export-reviewed", "--out", str(tmp_path / "x"), "--since", "last week"])
    assert bad.exit_code == 2 and "--since" in bad.output
    with app.app_context():
        details = [
            e.detail
            for e in db.session.scalars(
                db.select(AuditEvent).where(AuditEvent.target == "export-reviewed").order_by(AuditEvent.id)
            )
        ]
    assert details == [
        "3 reviewed films, on the command line",
        "3 reviewed films, on the command line",
        "0 reviewed films since 2999-01-01, on the command line",
    ]


def test_export_reviewed_writes_each_film_once_in_one_patient(app, client, upload, runner, tmp_path, chest_png):
    """A film uploaded twice would otherwise be two rows that training may put in two splits."""
    film_x, film_y, film_z = chest_png, another_film(chest_png, 1), another_film(chest_png, 2)
    x_as_p1, y_as_p2, x_as_p2 = (
        upload(film_x, reference="P-1"),
        upload(film_y, reference="P-2"),
        upload(film_x, reference="P-2"),
    )
    z_first, z_again = upload(film_z), upload(film_z)
    review(client, x_as_p1, "typical")
    for prediction in (y_as_p2, x_as_p2, z_first, z_again):  # x's later review disagrees with its first
        review(client, prediction, "negative")
    out = tmp_path / "export"
    result = runner.invoke(args=["export-reviewed", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [(r["file"], r["label"], r["patient_id"]) for r in csv_rows(out / "manifest.csv")]
    assert rows == [
        (f"images/{x_as_p1['id']}.png", "normal", "P-1"),  # the latest review's reading, negative
        (f"images/{y_as_p2['id']}.png", "normal", "P-1"),  # P-2 shares film x with P-1: one patient
        (f"images/{z_first['id']}.png", "normal", f"prediction:{z_first['id']}"),
    ]
    assert sorted(path.name for path in (out / "images").iterdir()) == sorted(Path(r[0]).name for r in rows)
    assert "Wrote 3 reviewed film(s)" in result.output
    assert "2 film(s) were uploaded more than once: each is written once, as one patient" in result.output
    assert (
        f"The reviews of predictions {x_as_p1['id']}, {x_as_p2['id']} (the same film) disagree; exported as 'normal'."
        in result.output
    )


def test_patients_joined_by_shared_films_are_one_group():
    from webapp.db import Prediction
    from webapp.export import films_of, patient_ids

    def prediction(id: int, sha: str, reference: str | None) -> Prediction:
        return Prediction(id=id, sha256=sha, reference=reference)

    records = [
        prediction(1, "a", "P-3"),
        prediction(2, "a", "P-2"),
        prediction(3, "b", "P-2"),
        prediction(4, "b", "P-1"),  # P-3 — a — P-2 — b — P-1: one patient, named by the first reference
        prediction(5, "c", None),
        prediction(6, "c", "Q-1"),  # a reference is preferred over prediction:<id>
        prediction(7, "d", None),
        prediction(8, "e", "P-9"),
    ]
    assert patient_ids(films_of(records)) == {
        "P-1": "P-1",
        "P-2": "P-1",
        "P-3": "P-1",
        "prediction:5": "Q-1",
        "Q-1": "Q-1",
        "prediction:7": "prediction:7",
        "P-9": "P-9",
    }


ROUND_TRIP_PER_CLASS = 12


@pytest.mark.slow
def test_round_trip_upload_review_export_train_evaluate(app, client, runner, tmp_path, bundle, capsys):
    """Real films are uploaded, reviewed with their data set label, exported, and a tiny model trained and
    evaluated on the export, beside the shipped model: the retrain-and-compare loop of the README."""
    shared = shared_manifest()
    from tests.test_training import TINY
    from training import evaluate, train

    wanted = {"covid": ROUND_TRIP_PER_CLASS, "normal": ROUND_TRIP_PER_CLASS}
    for row in csv_rows(shared):
        if not any(wanted.values()):
            break
        if wanted.get(row["label"], 0) == 0 or row["label"] not in bundle.classes:
            continue
        data = (SHARED_IMAGES / row["file"]).read_bytes()
        response = client.post(
            "/api/v1/predictions", data={"file": (io.BytesIO(data), row["file"]), "reference": row["patient_id"]}
        )
        if response.status_code == 422:  # the gate refuses some films; others stand in
            continue
        assert response.status_code == 201, response.get_json()
        review(client, response.get_json(), {"covid": "typical", "normal": "negative"}[row["label"]])
        wanted[row["label"]] -= 1
    if any(wanted.values()):
        missing(f"The gate accepted too few shared films: {wanted} still missing.")

    out = tmp_path / "export"
    result = runner.invoke(args=["export-reviewed", "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = out / "manifest.csv"
    labels = [r["label"] for r in csv_rows(manifest)]
    assert sorted(labels) == ["covid"] * ROUND_TRIP_PER_CLASS + ["normal"] * ROUND_TRIP_PER_CLASS

    model = tmp_path / "retrained"
    assert train.main(["--data", str(manifest), "--out", str(model), *TINY]) == 0
    for candidate in (model, bundle.directory):  # the retrained model and the one in use, on the same cases
        metrics = tmp_path / f"{candidate.name}.json"
        assert evaluate.main(["--model", str(candidate), "--data", str(manifest), "--out", str(metrics)]) == 0
        scored = json.loads(metrics.read_text())
        assert scored["n"] == 2 * ROUND_TRIP_PER_CLASS and scored["left_out_by_class"] == {}
    capsys.readouterr()


def test_only_the_uploader_or_an_administrator_sets_a_reference_once(app, client, tagged_dicom):
    created = client.post("/api/v1/predictions", data={"file": (io.BytesIO(tagged_dicom), "study.dcm")}).get_json()
    url = f"/api/v1/predictions/{created['id']}/reference"
    stranger = clinician_client(app, "colleague")
    refused = stranger.post(url, json={"reference": "PID-99"})
    assert refused.status_code == 403 and "uploaded this study" in refused.get_json()["error"]
    page = stranger.post(f"/predictions/{created['id']}/reference", data={"reference": "PID-99"})
    assert page.status_code == 403
    for bad in ("PID\x0077", "PID\n77", "PID\u202e77", "x" * 129):
        answer = client.post(url, json={"reference": bad})
        assert answer.status_code == 400, bad
    assert client.post(url, json={"reference": "PID-77"}).status_code == 200  # the uploader
    with app.app_context():
        assert db.session.get(Prediction, created["id"]).reference == "PID-77"
    add_user(app, "chief", "admin")
    admin = signed_in(app, "chief")
    again = admin.post(url, json={"reference": "PID-1"})
    assert again.status_code == 409  # once, even for an administrator
    other = client.post(  # the same file again, stored again (force): a prediction without a reference
        "/api/v1/predictions?force=1", data={"file": (io.BytesIO(tagged_dicom), "b.dcm")}
    ).get_json()
    by_admin = admin.post(f"/api/v1/predictions/{other['id']}/reference", json={"reference": "ACC-5"})
    assert by_admin.status_code == 200 and by_admin.get_json()["reference"] == "ACC-5"
    upload = client.post("/api/v1/predictions", data={"file": (io.BytesIO(tagged_dicom), "c.dcm"), "reference": "a\0b"})
    assert upload.status_code == 400 and "printable" in upload.get_json()["error"]


def test_offered_identifiers_stay_on_the_server_and_end_with_the_session(app, client, tagged_dicom):
    response = client.post("/", data={"files": [(io.BytesIO(tagged_dicom), "study.dcm")]})
    assert response.status_code == 303
    cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"]).value
    content = app.session_interface.get_signing_serializer(app).loads(cookie)
    assert "PID-77" not in repr(content) and "ACC-5" not in repr(content), content
    assert "Use PatientID PID-77" in client.get(response.location).get_data(as_text=True)
    with app.app_context():
        (offers,) = db.session.scalars(db.select(UserSession.reference_offers).where(UserSession.ended_at.is_(None)))
        assert "PID-77" in repr(offers)
    assert client.post("/logout").status_code == 302
    with app.app_context():
        assert db.session.scalars(db.select(UserSession.reference_offers)).all() == [None]


def test_export_reviewed_force_replaces_planted_links_instead_of_following_them(app, client, upload, runner, tmp_path):
    first = upload()
    review(client, first, "negative")
    out, victim = tmp_path / "export", tmp_path / "victim.txt"
    out.mkdir()
    victim.write_text("not to be overwritten")
    (out / "manifest.csv").symlink_to(victim)
    (out / "images").mkdir()
    (out / "images" / f"{first['id']}.png").symlink_to(victim)
    result = runner.invoke(args=["export-reviewed", "--out", str(out), "--force"])
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "not to be overwritten"
    assert not (out / "manifest.csv").is_symlink() and (out / "manifest.csv").read_text().startswith("file,label")
    assert not (out / "images" / f"{first['id']}.png").is_symlink()
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "images").symlink_to(tmp_path)
    refused = runner.invoke(args=["export-reviewed", "--out", str(linked), "--force"])
    assert refused.exit_code == 1 and "symbolic link" in refused.output
