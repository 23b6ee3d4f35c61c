"""The upload page and the result page, with the real model."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from cxr.overlay import OVERLAY_ALPHA, jet_palette
from tests.accounts import clinician_client, csrf_token
from tests.helpers import dicom_bytes, gray_pixels, make_legacy, png_bytes
from webapp.db import Prediction, db
from webapp.wording import class_label, decision_label

UNIFORM_PNG = png_bytes(np.full((256, 256), 128, dtype=np.uint8))  # decodes, but the gate refuses it


def _files(*items):
    return {"files": [(io.BytesIO(data), name) for data, name in items]}


def test_upload_page(client):
    response = client.get("/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'type="file"' in html and "multiple" in html and 'enctype="multipart/form-data"' in html
    assert 'name="reference"' in html and 'name="note"' in html
    assert "Research use only, not a diagnosis" in html


def test_single_upload_shows_result(client, app, chest_png, bundle):
    response = client.post("/", data={**_files((chest_png, "chest.png")), "reference": "STUDY-1", "note": "cough"})
    assert response.status_code == 303
    assert re.fullmatch(r"/predictions/\d+", response.location)
    html = client.get(response.location).get_data(as_text=True)
    with app.app_context():
        record = db.session.scalars(db.select(Prediction)).one()
        assert record.reference == "STUDY-1" and record.note == "cough" and record.filename == "chest.png"
        assert set(record.probabilities) == set(bundle.classes) == set(record.cnn_probabilities)
    assert f'data-decision="{record.decision}">{decision_label(record.decision)}</span>' in html
    for cls, value in record.probabilities.items():  # the ensemble's and the CNN's probability of every class
        assert f'<th scope="row">{class_label(cls)}</th><td class="num">{value * 100:.1f} %</td>' in html
        assert f"{record.cnn_probabilities[cls] * 100:.1f} %" in html
    assert f'data-p="{record.positive_probability:.4f}" data-threshold="{bundle.threshold:.4f}"' in html
    assert bundle.version in html and "Processing time" in html
    assert "Out-of-distribution score" in html and f"{record.ood_score:.2f}" in html
    assert "Research use only, not a diagnosis" in html
    assert "explains the <strong>CNN feature extractor</strong>" in html
    # The viewer colours the small heatmap with the overlay's table; the plain images show the overlay,
    # rendered when asked for (and not before: lazily).
    assert f'data-film="/predictions/{record.id}/image.png"' in html and "data-overlay=" not in html
    assert f'data-heat="/predictions/{record.id}/heatmap.png" data-colormap="{bytes(jet_palette()).hex()}"' in html
    assert f'data-heat-alpha="{OVERLAY_ALPHA}"' in html
    assert f'<img src="/predictions/{record.id}/overlay.jpg" loading="lazy"' in html
    for kind, mimetype, magic in (
        ("image.png", "image/png", b"\x89PNG"),
        ("heatmap.png", "image/png", b"\x89PNG"),
        ("overlay.jpg", "image/jpeg", b"\xff\xd8"),
    ):
        url = f"/predictions/{record.id}/{kind}"
        assert url in html
        image = client.get(url)
        assert image.status_code == 200 and image.mimetype == mimetype and image.data.startswith(magic)
    overlay = Image.open(io.BytesIO(client.get(f"/predictions/{record.id}/overlay.jpg").data))
    assert overlay.format == "JPEG" and overlay.size == Image.open(io.BytesIO(chest_png)).size
    assert client.get(f"/predictions/{record.id}/overlay.png").status_code == 404


def test_files_stored_under_generated_names(client, app, chest_png):
    client.post("/", data=_files((chest_png, "../../etc/evil name.png")))
    with app.app_context():
        record = db.session.scalars(db.select(Prediction)).one()
    assert record.filename == "evil name.png"
    folder = app.config["UPLOAD_FOLDER"]
    assert record.overlay_path is None  # rendered from the film and the heatmap when asked for
    for path in (record.image_path, record.heatmap_path, record.thumbnail_path):
        assert "evil" not in path and not path.startswith("/") and ".." not in path
        assert (folder / path).is_file()
    assert len([p for p in folder.rglob("*") if p.is_file()]) == 3


@pytest.mark.parametrize("extension", ["jpg", "png"])
def test_rows_stored_with_an_overlay_keep_working(client, app, runner, chest_png, tmp_path, extension):
    """Predictions stored before the heatmap have their overlay file and no heatmap (PNG before the overlay
    and thumbnail became JPEGs): the page, the overlay (as stored, not rendered), the PDF report, the
    storage check and the export of reviewed films work for them."""
    client.post("/", data=_files((chest_png, "old.png")))
    with app.app_context():
        record_id = db.session.scalars(db.select(Prediction.id)).one()
    stored = make_legacy(app, record_id, extension)
    html = client.get(f"/predictions/{record_id}").get_data(as_text=True)
    assert f'data-overlay="/predictions/{record_id}/overlay.{extension}"' in html and "data-heat=" not in html
    assert f'<img src="/predictions/{record_id}/overlay.{extension}" loading="lazy"' in html
    image = client.get(f"/predictions/{record_id}/overlay.{extension}")
    assert image.status_code == 200 and image.mimetype == f"image/{'jpeg' if extension == 'jpg' else 'png'}"
    assert image.data == stored
    other = "png" if extension == "jpg" else "jpg"
    assert client.get(f"/predictions/{record_id}/overlay.{other}").status_code == 404
    assert client.get(f"/predictions/{record_id}/heatmap.png").status_code == 404
    api = client.get(f"/api/v1/predictions/{record_id}").get_json()
    assert api["overlay_url"].endswith(f"/predictions/{record_id}/overlay.{extension}")
    report = client.get(f"/predictions/{record_id}/report.pdf")
    assert report.status_code == 200 and report.data.startswith(b"%PDF")
    result = runner.invoke(args=["check-storage"])
    assert result.exit_code == 0 and "Consistent" in result.output, result.output
    review = {"reading": "negative", "status": "final"}
    assert client.post(f"/predictions/{record_id}/reviews", data=review).status_code == 302
    result = runner.invoke(args=["export-reviewed", "--out", str(tmp_path / "export")])
    assert result.exit_code == 0 and "Wrote 1 reviewed film(s)" in result.output, result.output
    with app.app_context():
        film = app.config["UPLOAD_FOLDER"] / db.session.get(Prediction, record_id).image_path
    assert (tmp_path / "export" / "images" / f"{record_id}.png").read_bytes() == film.read_bytes()


def test_an_overlay_whose_stored_heatmap_is_gone_is_not_found(client, app, chest_png):
    client.post("/", data=_files((chest_png, "gone.png")))
    with app.app_context():
        record = db.session.scalars(db.select(Prediction)).one()
    (app.config["UPLOAD_FOLDER"] / record.heatmap_path).unlink()
    assert client.get(f"/predictions/{record.id}/overlay.jpg").status_code == 404


def _count(app) -> int:
    with app.app_context():
        return len(db.session.scalars(db.select(Prediction.id)).all())


def test_several_files_keep_the_good_ones(client, app, chest_png):
    response = client.post(
        "/",
        data={**_files((chest_png, "good.png"), (b"not an image", "bad.png"), (chest_png, "good2.png")), "force": "y"},
        follow_redirects=False,
    )
    assert response.status_code == 303  # Post/Redirect/Get: a reload of what follows stores nothing again
    with app.app_context():
        ids = db.session.scalars(db.select(Prediction.id).order_by(Prediction.id)).all()
    assert len(ids) == 2 and response.location == f"/?stored={ids[0]},{ids[1]}"
    page = client.get(response.location)
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    for prediction_id in ids:
        assert f'href="/predictions/{prediction_id}"' in html
    assert re.search(
        r'class="flash flash-error" role="alert">Not analysed: bad\.png\. [^<]*not an image the '
        r"service can read",
        html,
    )
    assert client.get(response.location).status_code == 200 and _count(app) == 2  # the reload


def test_the_form_after_a_multi_file_upload_is_empty(client, app, chest_png):
    response = client.post(
        "/", data={**_files((chest_png, "a.png"), (chest_png, "b.png")), "reference": "PATIENT-1", "force": "y"}
    )
    page = client.get(response.location).get_data(as_text=True)
    assert 'id="reference" maxlength="128" name="reference" type="text" value=""' in page
    assert "PATIENT-1" not in page.split("<form", 1)[1]


def test_png_jpeg_and_dicom_in_one_upload(client, app, chest_png):
    gray = gray_pixels(chest_png)
    jpeg = io.BytesIO()
    Image.fromarray(gray).save(jpeg, format="JPEG", quality=95)
    response = client.post("/", data=_files((chest_png, "a.png"), (jpeg.getvalue(), "b.jpg"), (dicom_bytes(gray), "c")))
    assert response.status_code == 303
    assert "flash-error" not in client.get(response.location).get_data(as_text=True)
    with app.app_context():
        names = db.session.scalars(db.select(Prediction.filename).order_by(Prediction.id)).all()
    assert names == ["a.png", "b.jpg", "c"]


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"not an image", 415, "not an image the service can read"),
        (b"", 400, "The file is empty"),
        (UNIFORM_PNG, 422, "almost uniform"),
        (png_bytes(np.zeros((40, 40), dtype=np.uint8)), 422, "at least 128 pixels"),
    ],
)
def test_bad_file_reported_on_the_page(client, app, data, status, message):
    response = client.post("/", data=_files((data, "x.png")))
    assert response.status_code == status
    html = response.get_data(as_text=True)
    assert message in html and 'type="file"' in html
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Prediction.id))) == 0
    assert not any(p.is_file() for p in app.config["UPLOAD_FOLDER"].rglob("*"))


def test_missing_file(client):
    response = client.post("/", data={"reference": "x"})
    assert response.status_code == 400
    assert "Choose at least one image." in response.get_data(as_text=True)


def test_too_many_files(make_app, chest_png):
    client = clinician_client(make_app(MAX_FILES_PER_UPLOAD=1))
    response = client.post("/", data=_files((chest_png, "a.png"), (chest_png, "b.png")))
    assert response.status_code == 400
    assert "at most 1 images" in response.get_data(as_text=True)


def test_reference_too_long(client, chest_png):
    response = client.post("/", data={**_files((chest_png, "a.png")), "reference": "x" * 129})
    assert response.status_code == 400


def test_upload_too_large(make_app, chest_png):
    client = clinician_client(make_app(MAX_CONTENT_LENGTH=10_000))
    response = client.post("/", data=_files((chest_png + b"\0" * 20_000, "big.png")))
    assert response.status_code == 413
    assert "larger than" in response.get_data(as_text=True)


def test_user_file_name_is_escaped(client, chest_png):
    name = "<img src=x onerror=alert(1)>.png"
    location = client.post("/", data=_files((chest_png, name))).location
    for page in (location, "/history"):
        html = client.get(page).get_data(as_text=True)
        assert "<img src=x onerror" not in html
        assert "&lt;img src=x onerror=alert(1)&gt;.png" in html


def test_csrf_protects_the_forms(make_app, chest_png):
    client = clinician_client(make_app(WTF_CSRF_ENABLED=True))
    refused = client.post("/", data=_files((chest_png, "a.png")))
    assert refused.status_code == 400
    assert "Reload the page" in refused.get_data(as_text=True)
    token = csrf_token(client, "/")
    accepted = client.post("/", data={**_files((chest_png, "a.png")), "csrf_token": token})
    assert accepted.status_code == 303
    # The review form needs its token too; so does the JSON API when the browser session signs it.
    assert (
        client.post(f"{accepted.location}/reviews", data={"reading": "negative", "status": "final"}).status_code == 400
    )
    api = client.post("/api/v1/predictions", data={"file": (io.BytesIO(chest_png), "a.png")})
    assert api.status_code == 400 and "Reload the page" in api.get_json()["error"]
    api = client.post(
        "/api/v1/predictions?force=1", data={"file": (io.BytesIO(chest_png), "a.png")}, headers={"X-CSRFToken": token}
    )
    assert api.status_code == 201


def test_pages_need_no_inline_script_or_external_resource(admin_client, anon, upload):
    prediction = upload()
    pages = (
        "/",
        "/history",
        "/model",
        f"/predictions/{prediction['id']}",
        "/account",
        "/admin/users",
        "/admin/audit",
        "/docs/api",
    )
    for client, page in [(admin_client, page) for page in pages] + [(anon, "/login")]:
        html = client.get(page).get_data(as_text=True)
        assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == [], page
        assert " style=" not in html and " on" + "click=" not in html, page
        assert not re.search(r'(src|href)="(https?:)?//', html), page
    assert anon.get("/static/app.js").status_code == 200
    assert anon.get("/static/style.css").status_code == 200
    assert anon.get("/static/theme.js").status_code == 200 and anon.get("/static/viewer.js").status_code == 200


def test_the_same_file_again_opens_its_prediction(client, app, chest_png):
    """A file uploaded before is not stored again: one file redirects to its prediction, with a message;
    in a batch it is listed with the others; "store it again" stores it."""
    first = client.post("/", data=_files((chest_png, "a.png")))
    assert first.status_code == 303 and _count(app) == 1
    again = client.post("/", data={**_files((chest_png, "renamed.png")), "reference": "R-2"})
    assert again.status_code == 303 and again.location == first.location and _count(app) == 1
    html = client.get(again.location).get_data(as_text=True)
    prediction_id = first.location.rsplit("/", 1)[1]
    assert f'class="flash flash-info" role="status">a.png was uploaded before: prediction #{prediction_id} of ' in html
    assert "upload it with “Analyse and store it again” ticked." in html
    batch = client.post(
        "/", data=_files((chest_png, "b.png"), (png_bytes(np.flipud(gray_pixels(chest_png))), "new.png"))
    )
    assert batch.status_code == 303 and _count(app) == 2
    with app.app_context():
        new_id = db.session.scalars(db.select(Prediction.id).order_by(Prediction.id.desc())).first()
    assert batch.location == f"/?stored={new_id},{prediction_id}"
    forced = client.post("/", data={**_files((chest_png, "c.png")), "force": "y"})
    assert forced.status_code == 303 and forced.location != first.location and _count(app) == 3
