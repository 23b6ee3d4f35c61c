"""Test helpers any test module imports (`from tests.helpers import ...`): paths, and synthetic images
and files built in memory."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest
from PIL import Image

from tools.films import png_bytes, synthetic_chest  # noqa: F401 (re-exported for the tests)

ROOT = Path(__file__).resolve().parent.parent
SHARED_IMAGES = ROOT.parent / "shared" / "data" / "cxr"

MODEL_DIR = ROOT / "models"  # the shipped model: the web tests use the real thing, not a mock


def missing(reason: str) -> NoReturn:
    """Skip a test whose data (../shared, the model, a film the gate accepts) or tools (PostgreSQL, its
    driver) are not here; fail it under CI=true.

    CI has ../shared beside the checkout, the shipped model, and what `make test` installs: there, a test
    that cannot get what it needs fails, so that a missing data set, server or a gate that refuses every
    film cannot turn the suite green."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):  # read now: tests of this helper set it
        pytest.fail(f"{reason} (CI=true: a test that needs it fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


def shared_manifest() -> Path:
    """../shared's manifest.csv; `missing` when the shared films are absent."""
    manifest = SHARED_IMAGES / "manifest.csv"
    if not manifest.is_file():
        missing(f"The shared films ({SHARED_IMAGES}) are absent.")
    return manifest


def csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header, read and closed."""
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def dicom_bytes(
    gray: np.ndarray,
    modality: str = "DX",
    body_part: str = "CHEST",
    fine: np.ndarray | None = None,
    window: tuple[float, float] | None = None,
) -> bytes:
    """A 12-bit MONOCHROME2 DICOM file (with preamble) holding the 8-bit `gray` image × 16, plus `fine` (0-15
    per pixel: detail below 8 bits) when given, with the WindowCenter/Width `window` when given."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.BodyPartExamined = modality, body_part
    ds.Rows, ds.Columns = gray.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    values = gray.astype(np.uint16) * 16 + (0 if fine is None else fine.astype(np.uint16))
    ds.PixelData = values.tobytes()
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def gray_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"))


def make_legacy(app, prediction_id: int, extension: str = "jpg") -> bytes:
    """Turn a stored prediction into one stored before heatmaps were: its overlay as a file (`extension`:
    JPEG, or PNG as before 2026-11-23) under `overlay_path`, no heatmap. Returns the overlay file's bytes."""
    from cxr.overlay import jpeg_bytes, overlay_from_files
    from webapp.db import Prediction, db

    folder = Path(app.config["UPLOAD_FOLDER"])
    with app.app_context():
        record = db.session.get(Prediction, prediction_id)
        overlay = overlay_from_files(folder / record.image_path, folder / record.heatmap_path)
        data = jpeg_bytes(overlay) if extension == "jpg" else png_bytes(overlay)
        relative = record.heatmap_path.removesuffix("-heat.png") + f"-overlay.{extension}"
        (folder / relative).write_bytes(data)
        (folder / record.heatmap_path).unlink()
        record.overlay_path, record.heatmap_path = relative, None
        db.session.commit()
    return data
