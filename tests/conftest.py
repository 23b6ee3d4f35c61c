"""Shared fixtures (Flask tutorial style): one real model bundle per session, and per test an app on a
temporary instance folder with its own SQLite database and upload folder."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from app import create_app
from tests.accounts import add_user, clinician_client, signed_in

ROOT = Path(__file__).resolve().parent.parent
SHARED_IMAGES = ROOT.parent / "shared" / "data" / "cxr"


MODEL_DIR = ROOT / "models"  # the shipped model: the web tests use the real thing, not a mock


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def synthetic_chest(seed: int = 0, size: int = 320) -> np.ndarray:
    """A chest-like 8-bit radiograph: dark lung fields and a bright spine in a bright body on a dark background."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.full((size, size), 0.05)
    body = ((x - 0.5) / 0.47) ** 2 + ((y - 0.6) / 0.55) ** 2 < 1
    image[body] = 0.7
    for centre in (0.3, 0.7):
        lung = ((x - centre) / 0.16) ** 2 + ((y - 0.5) / 0.32) ** 2 < 1
        image[lung] = 0.2 + 0.15 * (y[lung] - 0.2)
    image += 0.08 * (np.sin(y * 60 + 4 * np.abs(x - 0.5)) > 0.6) * body  # ribs
    image[(np.abs(x - 0.5) < 0.05) & (y > 0.05)] = 0.85  # spine
    image += rng.normal(0, 0.04, image.shape)
    gray = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8))
    return np.asarray(gray.filter(ImageFilter.GaussianBlur(8)))


def dicom_bytes(gray: np.ndarray, modality: str = "DX", body_part: str = "CHEST") -> bytes:
    """A 12-bit MONOCHROME2 DICOM file (with preamble) holding the 8-bit `gray` image."""
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
    ds.PixelData = (gray.astype(np.uint16) * 16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def gray_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"))


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return MODEL_DIR


@pytest.fixture(scope="session")
def bundle(model_dir):
    from cxr.bundle import ModelBundle

    return ModelBundle(model_dir)


@pytest.fixture(scope="session")
def chest_png(bundle) -> bytes:
    """A PNG the model's out-of-distribution gate accepts: the synthetic chest, else a real shared image."""
    from cxr.gate import assess
    from cxr.imaging import decode_image

    candidates = [png_bytes(synthetic_chest(seed)) for seed in range(3)]
    if SHARED_IMAGES.is_dir():
        candidates += [path.read_bytes() for path in sorted(SHARED_IMAGES.glob("*.png"))[:10]]
    for data in candidates:
        image = decode_image(data)
        if assess(image, bundle.predict(image.pixels)).accepted:
            return data
    pytest.skip(
        f"The gate of the model in {MODEL_DIR} accepts neither the synthetic chest images nor a real one "
        f"({SHARED_IMAGES} {'has none accepted' if SHARED_IMAGES.is_dir() else 'is absent'})."
    )


@pytest.fixture
def make_app(tmp_path, bundle):
    """A factory for apps on this test's instance folder; keyword arguments override the test config."""

    def make(**overrides):
        config = {
            "TESTING": True,
            "SECRET_KEY": "test",
            "INSTANCE_PATH": str(tmp_path / "instance"),
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'test.sqlite'}",
            "UPLOAD_FOLDER": str(tmp_path / "uploads"),
            "WTF_CSRF_ENABLED": False,
            "MODEL_BUNDLE": bundle,
            "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",  # scrypt's cost buys nothing in tests
            **overrides,
        }
        return create_app(config)

    return make


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def anon(app):
    """A client that has not signed in."""
    return app.test_client()


@pytest.fixture
def client(app):
    """A client signed in as the clinician 'clinician'."""
    return clinician_client(app)


@pytest.fixture
def admin_client(app):
    """A client signed in as the administrator 'boss'."""
    add_user(app, "boss", "admin")
    return signed_in(app, "boss")


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def upload(client, chest_png):
    """Store one prediction through the JSON API and return its JSON."""

    def post(data: bytes | None = None, name: str = "chest.png", **fields):
        response = client.post("/api/v1/predictions", data={"file": (io.BytesIO(data or chest_png), name), **fields})
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    return post
