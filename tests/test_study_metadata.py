"""Study metadata (issue 23, item 9; kept with the PACS columns of issue 24): from a DICOM upload's header,
or typed at upload for a PNG/JPEG; shown on the result page, the worklist, the PDF and the API; priors
ordered by study date; portable AP films flagged."""

from __future__ import annotations

import io
import re
import zlib

import pydicom
import pytest

from tests.helpers import dicom_bytes, gray_pixels
from tests.test_workflow import tags
from webapp.db import Prediction, db
from webapp.study import PORTABLE_WARNING


def dicom_film(chest_png: bytes, **header) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(gray_pixels(chest_png), modality="DX")))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4", "1.2.3.4.5"
    for keyword, value in header.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def pdf_text(pdf: bytes) -> str:
    """The text matplotlib draws (kerned `[(a) 0.3 (b)] TJ` arrays), one line per array."""
    text = []
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S):
        try:
            text.append(zlib.decompress(stream).decode("latin-1"))
        except zlib.error:
            continue
    strings = r"\(((?:\\.|[^\\)])*)\)"  # (text) with \( \) \\ escapes
    arrays = re.findall(rf"\[((?:\s*(?:{strings}|[-\d.]+))*)\s*\]\s*TJ", "".join(text), re.S)
    lines = ("".join(re.findall(strings, array[0], re.S)) for array in arrays)
    return "\n".join(re.sub(r"\\(.)", r"\1", line) for line in lines)


def test_dicom_header_fills_the_study_metadata(app, upload, chest_png):
    data = dicom_film(
        chest_png, ViewPosition="AP", ImageLaterality="", Laterality="L", StudyDate="20261130", AccessionNumber="A77"
    )
    body = upload(data, name="film.dcm", view_position="PA", study_date="2026-01-01")  # the header wins
    study = body["study"]
    assert study == {
        "study_instance_uid": "1.2.3.4",
        "series_instance_uid": "1.2.3.4.5",
        "sop_instance_uid": pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID,
        "accession_number": "A77",
        "view_position": "AP",
        "portable": True,
        "laterality": "L",
        "modality": "DX",
        "study_date": "2026-11-30",
        "origin": "upload",
        "results_sent": None,
    }


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns of the invalid values on purpose
def test_invalid_header_values_are_left_out(app, upload, chest_png):
    data = dicom_film(chest_png, StudyDate="20261340", AccessionNumber="X" * 16 + "TOOLONG")
    study = upload(data, name="film.dcm")["study"]
    assert study["study_date"] is None and study["accession_number"] is None


def test_typed_view_and_study_date_for_a_png(app, client, chest_png):
    response = client.post(
        "/",
        data={"files": [(io.BytesIO(chest_png), "bedside.png")], "view_position": "AP", "study_date": "2026-11-02"},
    )
    assert response.status_code == 303
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    flag = re.search(r'<p class="portable-flag" role="note" id="portable-flag">(.*?)</p>', page, re.S)
    assert flag and "Portable AP film." in flag[1] and PORTABLE_WARNING in flag[1]
    assert '<dt>Study date</dt><dd class="study-fact">2026-11-02</dd>' in page
    assert '<dt>View</dt><dd class="study-fact">AP (anteroposterior)</dd>' in page
    assert '<dt>Source</dt><dd class="study-fact">Upload</dd>' in page
    worklist = client.get("/history").get_data(as_text=True)
    assert tags(worklist, "span", class_="portable-badge", title=PORTABLE_WARNING)
    assert "2026-11-02" in worklist and '<span class="origin">Upload</span>' in worklist
    with app.app_context():
        record = db.session.scalar(db.select(Prediction))
    text = pdf_text(client.get(f"/predictions/{record.id}/report.pdf").data)
    assert (
        "Study date: 2026-11-02" in text and "View: AP (anteroposterior)" in text and "COVID-19 models err most" in text
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"view_position": "LATERAL"}, "Unknown view &#39;LATERAL&#39;."),
        ({"study_date": "2999-01-01"}, "The study date is in the future."),
        ({"study_date": "yesterday"}, "Not a valid date value."),
    ],
)
def test_typed_values_are_checked(client, chest_png, fields, message):
    response = client.post("/", data={"files": [(io.BytesIO(chest_png), "film.png")], **fields})
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)


def test_a_pa_film_is_not_flagged_and_priors_follow_the_study_date(app, client, upload, chest_png):
    old = upload(reference="MRN-5", view_position="PA", study_date="2025-01-10")
    newest = upload(reference="MRN-5", study_date="2026-06-01")
    undated = upload(reference="MRN-5")
    current = upload(reference="MRN-5", study_date="2026-07-01")
    page = client.get(f"/predictions/{current['id']}").get_data(as_text=True)
    assert 'id="portable-flag"' not in page
    prior_ids = [int(i) for i in re.findall(r'<li>\s*<a href="/predictions/(\d+)">', page)]
    assert prior_ids == [newest["id"], old["id"], undated["id"]]  # by study date, undated last


def test_viewer_link_from_the_template(make_app, chest_png):
    from tests.accounts import clinician_client

    app = make_app(PACS_VIEWER_URL="https://pacs.example/viewer?StudyInstanceUIDs={study_uid}")
    client = clinician_client(app)
    response = client.post("/api/v1/predictions", data={"file": (io.BytesIO(dicom_film(chest_png)), "f.dcm")})
    assert response.status_code == 201
    page = client.get(f"/predictions/{response.get_json()['id']}").get_data(as_text=True)
    assert tags(page, "a", id="viewer-link", href="https://pacs.example/viewer?StudyInstanceUIDs=1.2.3.4")


def test_migration_keeps_predictions_and_reviews_and_enforces_one_row_per_pacs_instance(make_app, tmp_path):
    import flask_migrate
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import text

    from webapp.db import MIGRATIONS

    app = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'old.sqlite'}")
    with app.app_context():
        flask_migrate.upgrade(directory=str(MIGRATIONS), revision="e3f1a7c9d402")
        run = db.session.execute
        run(
            text(
                "INSERT INTO predictions (id, created_at, filename, sha256, image_path, overlay_path, thumbnail_path, "
                "label, decision, probabilities, cnn_probabilities, model_version, elapsed_ms, ood_score) VALUES "
                "(1, '2026-01-02 00:00:00', 'a.png', 'h', 'a.png', 'b.jpg', 'c.jpg', 'covid', 'covid', '{}', '{}', "
                "'v1', 1.0, 0.5)"
            )
        )
        run(
            text(
                "INSERT INTO reviews (id, prediction_id, created_at, updated_at, agrees, correct_class) "
                "VALUES (1, 1, '2026-01-03', '2026-01-03', 1, 'covid')"
            )
        )
        db.session.commit()
        flask_migrate.upgrade(directory=str(MIGRATIONS))
        assert run(text("SELECT origin, study_date FROM predictions")).one() == ("upload", None)
        assert run(text("SELECT count(*) FROM reviews")).scalar() == 1  # the table copy kept the review
        with db.engine.connect() as connection:  # the models and the migrations agree on these columns
            differences = compare_metadata(MigrationContext.configure(connection), db.metadata)
        ours = ("uid", "accession", "view_position", "laterality", "modality", "study_date", "origin", "results_sent")
        assert [d for d in differences if any(name in repr(d) for name in ours)] == []
        insert = text(
            "INSERT INTO predictions (created_at, filename, sha256, image_path, overlay_path, thumbnail_path, label, "
            "decision, probabilities, cnn_probabilities, model_version, elapsed_ms, ood_score, sop_instance_uid, "
            "origin) VALUES ('2026-01-02', 'x.dcm', 'h', 'x', 'y', 'z', 'covid', 'covid', '{}', '{}', 'v1', 1.0, "
            "0.5, '1.2.3', :origin)"
        )
        for origin in ("upload", "upload", "ORTHANC"):  # uploads may repeat an instance; the PACS once
            run(insert, {"origin": origin})
        with pytest.raises(Exception, match="UNIQUE"):
            run(insert, {"origin": "DICOMweb"})
        db.session.rollback()
        flask_migrate.downgrade(directory=str(MIGRATIONS), revision="e3f1a7c9d402")
        assert run(text("SELECT count(*) FROM reviews")).scalar() == 1
        db.engine.dispose()
