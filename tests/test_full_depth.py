"""A DICOM's full bit depth reaches the viewer: its modality values are stored as a 16-bit PNG beside the
8-bit film, served with the prediction, and windowed on the canvas from the DICOM's own window (the browser
test is in tests/test_browser.py)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from tests.helpers import dicom_bytes, gray_pixels
from webapp.db import Prediction, db


def chest_dicom(chest_png: bytes, window: tuple[float, float] | None = (2100, 4000)) -> tuple[bytes, np.ndarray]:
    """A 12-bit DICOM of the test film whose low 4 bits carry detail the 8-bit film cannot hold, and its values."""
    gray = gray_pixels(chest_png)
    fine = (np.arange(gray.size).reshape(gray.shape) % 16).astype(np.uint16)
    values = gray.astype(np.uint16) * 16 + fine
    return dicom_bytes(gray, fine=fine, window=window), values


def test_a_dicom_keeps_its_full_depth_for_the_viewer(app, client, chest_png):
    data, values = chest_dicom(chest_png)
    response = client.post("/api/v1/predictions", data={"file": (io.BytesIO(data), "study.dcm")})
    assert response.status_code == 201, response.get_json()
    created = response.get_json()
    assert created["depth_url"].endswith(f"/predictions/{created['id']}/depth.png")
    low = int(values.min())
    assert created["depth_window"] == {"center": 2100 - low, "width": 4000}
    depth = client.get(created["depth_url"])
    assert depth.status_code == 200 and depth.mimetype == "image/png"
    stored = Image.open(io.BytesIO(depth.data))
    assert stored.mode == "I;16"
    assert np.array_equal(np.asarray(stored), values - low)  # every one of the 12 bits, losslessly
    page = client.get(f"/predictions/{created['id']}").get_data(as_text=True)
    assert f'data-depth="/predictions/{created["id"]}/depth.png"' in page
    assert f'data-window-center="{2100 - low}" data-window-width="4000"' in page
    for preset in ("lung", "mediastinum", "bone"):
        assert f'data-preset="{preset}"' in page


def test_monochrome1_is_turned_round_and_a_png_has_no_depth(app, client, chest_png):
    import pydicom

    _, values = chest_dicom(chest_png)
    raw = 4095 - values  # MONOCHROME1: low values are white
    gray = gray_pixels(chest_png)
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(255 - gray, fine=15 - (values - gray.astype(np.uint16) * 16))))
    ds.PhotometricInterpretation = "MONOCHROME1"
    assert np.array_equal(ds.pixel_array, raw)
    buffer = io.BytesIO()
    ds.save_as(buffer)
    response = client.post("/api/v1/predictions", data={"file": (io.BytesIO(buffer.getvalue()), "m1.dcm")})
    assert response.status_code == 201, response.get_json()
    created = response.get_json()
    stored = np.asarray(Image.open(io.BytesIO(client.get(created["depth_url"]).data)))
    assert np.array_equal(stored, int(raw.max()) - raw)  # turned round: bone white, as displayed
    assert created["depth_window"] is None
    plain = client.post("/api/v1/predictions", data={"file": (io.BytesIO(chest_png), "a.png")}).get_json()
    assert plain["depth_url"] is None and plain["depth_window"] is None
    assert client.get(f"/predictions/{plain['id']}/depth.png").status_code == 404
    with app.app_context():
        assert db.session.get(Prediction, plain["id"]).depth_path is None


def test_storage_check_knows_the_depth_file(app, client, chest_png):
    from webapp.storage_check import check_storage

    data, _ = chest_dicom(chest_png)
    assert client.post("/api/v1/predictions", data={"file": (io.BytesIO(data), "study.dcm")}).status_code == 201
    assert client.post("/api/v1/predictions", data={"file": (io.BytesIO(chest_png), "b.png")}).status_code == 201
    with app.app_context():
        report = check_storage(min_age=0.0)
    # Seven files (the DICOM's four, the PNG's three), all of them a row's; no row misses one.
    assert (report.rows, report.files) == (2, 7)
    assert report.orphans == [] and report.young_orphans == [] and report.rows_missing_files == {}
