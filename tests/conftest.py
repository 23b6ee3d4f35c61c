"""Shared fixtures (Flask tutorial style): one real model bundle per session, and per test an app on a
temporary instance folder with its own database and upload folder.

The database is SQLite, unless a test is marked `databases(...)`: it then runs once per backend named,
and on "postgres" against a database on one throwaway PostgreSQL server per session, emptied before each
test (those runs carry the `postgres` marker: `pytest -m postgres`)."""

from __future__ import annotations

import io
import itertools
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from flask.testing import FlaskClient

from tests.accounts import add_user, clinician_client, signed_in
from tests.helpers import MODEL_DIR, SHARED_IMAGES, missing, png_bytes, synthetic_chest
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
        if assess(image, bundle.predict(image.pixels), bundle.gate).accepted:
            return data
    missing(
        f"The gate of the model in {MODEL_DIR} accepts neither the synthetic chest images nor a real one "
        f"({SHARED_IMAGES} {'has none accepted' if SHARED_IMAGES.is_dir() else 'is absent'})."
    )


class BufferedClient(FlaskClient):
    """The test client, reading each response whole and closing it, as a WSGI server does once it has sent
    it: the request body's spooled file (webapp/request_body.py) is then closed, not left to the garbage
    collector."""

    def open(self, *args, **kwargs):
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


def buffered_app(config: dict):
    """`create_app(config)` with the buffered test client."""
    app = create_app(config)
    app.test_client_class = BufferedClient
    return app


def migrated_app(url: str, folder: Path, bundle):
    """An app on the database at `url` with its schema created and its first administrator."""
    app = buffered_app(
        {
            **TEST_CONFIG,
            "INSTANCE_PATH": str(folder / "instance"),
            "MODEL_BUNDLE": bundle,
            "SQLALCHEMY_DATABASE_URI": url,
        }
    )
    prepare_database(app)
    return app


@pytest.fixture(scope="session")
def template_database(tmp_path_factory, bundle) -> Path:
    """A SQLite database migrated once (schema and first administrator), copied by every test that uses it."""
    folder = tmp_path_factory.mktemp("template")
    path = folder / "template.sqlite"
    with migrated_app(f"sqlite:///{path}", folder, bundle).app_context():
        from webapp.db import db

        db.engine.dispose()
    return path


# -- PostgreSQL -----------------------------------------------------------------------------------------


def pytest_generate_tests(metafunc):
    """`@pytest.mark.databases("sqlite", "postgres")`: run the test once per backend (see `database`)."""
    marker = metafunc.definition.get_closest_marker("databases")
    if marker and "database" in metafunc.fixturenames:
        backends = [
            pytest.param(name, marks=pytest.mark.postgres) if name == "postgres" else name for name in marker.args
        ]
        metafunc.parametrize("database", backends, indirect=True)


@pytest.fixture
def database(request) -> str:
    """The backend of this test's database: "sqlite", or the one `databases(...)` parametrises."""
    return getattr(request, "param", "sqlite")


@pytest.fixture(scope="session")
def postgres_server():
    """One throwaway PostgreSQL server on loopback for the session (tools/postgres.py); every test makes
    its own databases on it. Missing server binaries or driver skip the tests here, and fail them in CI."""
    from tools.postgres import Postgres, PostgresUnavailable

    try:
        server = Postgres()
    except PostgresUnavailable as exc:
        missing(str(exc))
    with server:
        yield server


@pytest.fixture(scope="session")
def postgres_test_app(postgres_server, tmp_path_factory, bundle):
    """An app on a PostgreSQL database migrated once, which every test on "postgres" starts from emptied:
    emptying takes milliseconds where copying a database took seconds (CREATE and DROP DATABASE checkpoint)."""
    return migrated_app(postgres_server.create_database("test"), tmp_path_factory.mktemp("pg-test"), bundle)


def reset_postgres(app) -> str:
    """Empty every table of the app's database (ids restart at 1) and create the first administrator again,
    as on a fresh install; the apps of earlier tests are disconnected first. Returns the database URL."""
    from sqlalchemy import inspect, text

    from webapp.accounts import ensure_first_admin
    from webapp.db import db

    with app.app_context(), db.engine.begin() as connection:
        connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
        tables = [f'"{name}"' for name in inspect(connection).get_table_names() if name != "alembic_version"]
        connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    ensure_first_admin(app)
    return app.config["SQLALCHEMY_DATABASE_URI"]


_database_numbers = itertools.count()


@pytest.fixture
def empty_database_url(database, tmp_path, request) -> str:
    """A database without tables of this test's backend, for tests that migrate it themselves. On
    PostgreSQL a new one, disconnected after the test and left to go with the session's server."""
    if database == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.sqlite'}"
    server = request.getfixturevalue("postgres_server")
    name = f"empty_{next(_database_numbers)}"
    request.addfinalizer(lambda: server.disconnect(name))
    return server.create_database(name)


@pytest.fixture
def database_url(database, tmp_path, request) -> str:
    """This test's database, migrated, with the first administrator and nothing else (kept across apps, as
    a restarted server keeps its database): a copy of the SQLite template, or the PostgreSQL one emptied."""
    if database == "postgres":
        return reset_postgres(request.getfixturevalue("postgres_test_app"))
    path = tmp_path / "test.sqlite"
    shutil.copyfile(request.getfixturevalue("template_database"), path)
    return f"sqlite:///{path}"


@pytest.fixture
def make_app(tmp_path, bundle, database_url):
    """A factory for apps on this test's instance folder and its own database (`database_url`); keyword
    arguments override the test config. A test that names another database migrates it itself."""

    def make(**overrides):
        config = {
            **TEST_CONFIG,
            "INSTANCE_PATH": str(tmp_path / "instance"),
            "SQLALCHEMY_DATABASE_URI": database_url,
            "UPLOAD_FOLDER": str(tmp_path / "uploads"),
            "MODEL_BUNDLE": bundle,
            **overrides,
        }
        return buffered_app(config)

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
