"""Shared fixtures (Flask tutorial style): one real model bundle per session, and per test an app on a
temporary instance folder with its own SQLite database and upload folder."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests.accounts import add_user, clinician_client, signed_in
from tests.helpers import MODEL_DIR, SHARED_IMAGES, png_bytes, synthetic_chest
from webapp import create_app
from webapp.startup import prepare_database

TEST_CONFIG = {
    "TESTING": True,
    "SECRET_KEY": "test",
    "WTF_CSRF_ENABLED": False,
    "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",  # scrypt's cost buys nothing in tests
    "SIGN_IN_BACKOFF_SECONDS": 0.0,  # tests/test_accounts.py turns the back-off on where it tests it
}


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


@pytest.fixture(scope="session")
def template_database(tmp_path_factory, bundle) -> Path:
    """A SQLite database migrated once (schema and first administrator), copied by every test that uses it."""
    folder = tmp_path_factory.mktemp("template")
    path = folder / "template.sqlite"
    app = create_app(
        {
            **TEST_CONFIG,
            "INSTANCE_PATH": str(folder / "instance"),
            "MODEL_BUNDLE": bundle,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{path}",
        }
    )
    prepare_database(app)
    with app.app_context():
        from webapp.db import db

        db.engine.dispose()
    return path


@pytest.fixture
def make_app(tmp_path, bundle, template_database):
    """A factory for apps on this test's instance folder and its own copy of the template database
    (kept across calls, as a restarted server keeps its database); keyword arguments override the
    test config. A test that names another database migrates it itself."""

    def make(**overrides):
        database = tmp_path / "test.sqlite"
        if "SQLALCHEMY_DATABASE_URI" not in overrides and not database.exists():
            shutil.copyfile(template_database, database)
        config = {
            **TEST_CONFIG,
            "INSTANCE_PATH": str(tmp_path / "instance"),
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{database}",
            "UPLOAD_FOLDER": str(tmp_path / "uploads"),
            "MODEL_BUNDLE": bundle,
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
    """Store one prediction through the JSON API and return its JSON (force=1: the same film is stored again)."""

    def post(data: bytes | None = None, name: str = "chest.png", **fields):
        response = client.post(
            "/api/v1/predictions?force=1", data={"file": (io.BytesIO(data or chest_png), name), **fields}
        )
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    return post
