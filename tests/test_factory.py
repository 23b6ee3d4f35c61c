"""The application factory and start-up: configuration sources, the model service, secret key, database set-up."""

from __future__ import annotations

import ast
import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from cxr.errors import ModelBundleError
from tools.common import ROOT
from webapp import create_app
from webapp.db import MIGRATIONS, db
from webapp.model_service import model_service
from webapp.startup import check_model_directory, prepare_database


def test_testing_config(app, bundle):
    assert app.testing
    with app.app_context():
        assert model_service.bundle is bundle


def test_factory_neither_loads_the_model_nor_migrates(tmp_path, model_dir, monkeypatch):
    """Every `flask` command and every test creates an app: neither TensorFlow nor Alembic runs then."""
    import webapp.model_service as service

    monkeypatch.setattr(service, "ModelBundle", lambda directory: pytest.fail("the factory loaded the model"))
    database = tmp_path / "untouched.sqlite"
    app = create_app(
        {
            "INSTANCE_PATH": str(tmp_path / "instance"),
            "SECRET_KEY": "x",
            "MODEL_DIR": str(model_dir),
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{database}",
        }
    )
    with app.app_context():
        assert model_service.loaded is None
        assert inspect(db.engine).get_table_names() == []


def test_environment_and_instance_config(monkeypatch, tmp_path, model_dir):
    """Without a test config: CXR_* variables and DATABASE_URL, overridden by instance/config.py;
    the model is loaded from CXR_MODEL_DIR once, by the preload a worker makes before serving."""
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "config.py").write_text("PER_PAGE = 7\n")
    monkeypatch.setenv("CXR_INSTANCE_PATH", str(instance))
    monkeypatch.setenv("CXR_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("CXR_UPLOAD_FOLDER", str(tmp_path / "files"))
    monkeypatch.setenv("CXR_MAX_CONTENT_LENGTH", "1048576")
    monkeypatch.setenv("CXR_PER_PAGE", "5")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'env.sqlite'}")
    monkeypatch.delenv("SECRET_KEY", raising=False)
    app = create_app()
    assert app.instance_path == str(instance)
    assert app.config["MAX_CONTENT_LENGTH"] == 1048576
    assert app.config["UPLOAD_FOLDER"] == tmp_path / "files"
    assert app.config["PER_PAGE"] == 7  # instance/config.py wins over the environment
    assert app.config["SQLALCHEMY_DATABASE_URI"].endswith("env.sqlite")
    assert model_service.preload(app).directory == model_dir
    with app.app_context():
        assert model_service.bundle is model_service.loaded  # loaded once, kept
    prepare_database(app)
    assert (tmp_path / "env.sqlite").exists()


def test_defaults_live_under_instance(monkeypatch, tmp_path, bundle):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    instance = tmp_path / "instance"
    app = create_app({"INSTANCE_PATH": str(instance), "MODEL_BUNDLE": bundle, "SECRET_KEY": "x"})
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{instance / 'cxr.sqlite'}"
    assert app.config["UPLOAD_FOLDER"] == instance / "uploads"
    assert app.config["MAX_CONTENT_LENGTH"] == 32 * 1024 * 1024
    prepare_database(app)
    assert (instance / "cxr.sqlite").exists()


def _broken_copy(model_dir, tmp_path, change):
    target = tmp_path / "model"
    shutil.copytree(model_dir, target, ignore=shutil.ignore_patterns("report", "split.csv"))
    change(target)
    return target


def test_missing_model_file_stops_start_up(tmp_path, model_dir):
    broken = _broken_copy(model_dir, tmp_path, lambda d: (d / "cnn.keras").unlink())
    app = create_app({"MODEL_DIR": str(broken), "INSTANCE_PATH": str(tmp_path / "instance"), "SECRET_KEY": "x"})
    with pytest.raises(ModelBundleError, match=r"lacks cnn\.keras.*(train|restore|git checkout)"):
        check_model_directory(app)  # the gunicorn master, before any worker starts
    with pytest.raises(ModelBundleError, match=r"lacks cnn\.keras.*(train|restore|git checkout)"):
        model_service.preload(app)  # a worker with STRICT_STARTUP


def test_mismatched_model_card_stops_start_up(tmp_path, model_dir):
    def tamper(directory):
        card = json.loads((directory / "model_card.json").read_text())
        card["version"] = "0" * 16
        (directory / "model_card.json").write_text(json.dumps(card))

    broken = _broken_copy(model_dir, tmp_path, tamper)
    app = create_app({"MODEL_DIR": str(broken), "INSTANCE_PATH": str(tmp_path / "instance"), "SECRET_KEY": "x"})
    with pytest.raises(ModelBundleError, match="do not match"):
        check_model_directory(app)
    with pytest.raises(ModelBundleError, match="do not match"):
        model_service.preload(app)


def test_secret_key_generated_once_with_private_permissions(make_app, tmp_path):
    first = make_app(SECRET_KEY=None)
    key_file = tmp_path / "instance" / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(first.config["SECRET_KEY"]) == 64
    assert make_app(SECRET_KEY=None).config["SECRET_KEY"] == first.config["SECRET_KEY"]
    assert [p.name for p in key_file.parent.iterdir() if p.name.startswith(".secret_key")] == []


def test_sqlite_uses_wal_and_busy_timeout(app):
    with app.app_context():
        assert db.session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert db.session.execute(text("PRAGMA busy_timeout")).scalar() == app.config["SQLITE_BUSY_TIMEOUT_MS"]
        assert db.session.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_schema_created_at_newest_migration_on_first_run(app):
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    with app.app_context():
        assert {"predictions", "reviews", "alembic_version"} <= set(inspect(db.engine).get_table_names())
        assert db.session.execute(text("SELECT version_num FROM alembic_version")).scalar() == head


def test_init_db_command(runner, app):
    result = runner.invoke(args=["init-db"])
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output


def test_serving_code_does_not_import_training():
    root = Path(__file__).resolve().parent.parent
    files = [root / "app.py", root / "wsgi.py", *root.glob("webapp/**/*.py"), *root.glob("cxr/**/*.py")]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(name == "training" or name.startswith("training.") for name in names), path


def test_upgrading_an_old_database_keeps_its_reviews(make_app, tmp_path):
    """Migrations that rebuild `predictions` (SQLite batch mode) must not cascade-delete its reviews."""
    import flask_migrate

    app = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'old.sqlite'}")
    with app.app_context():
        flask_migrate.upgrade(directory=str(MIGRATIONS), revision="b41c2e9d7a10")
        db.session.execute(
            text(
                "INSERT INTO predictions (id, created_at, filename, sha256, image_path, overlay_path, thumbnail_path, "
                "label, probabilities, cnn_probabilities, threshold, model_version, elapsed_ms, ood_score) VALUES "
                "(1, '2026-01-01 00:00:00', 'a.png', 'x', 'a', 'b', 'c', 'covid', '{\"covid\": 0.9, \"normal\": 0.1}', "
                "'{\"covid\": 0.8, \"normal\": 0.2}', 0.5, 'v1', 10.0, 0.5)"
            )
        )
        db.session.execute(
            text(
                "INSERT INTO reviews (id, prediction_id, created_at, agrees, correct_class, comment) VALUES "
                "(1, 1, '2026-01-02 00:00:00', 1, 'covid', 'kept')"
            )
        )
        db.session.commit()
        flask_migrate.upgrade(directory=str(MIGRATIONS))
        assert db.session.execute(text("SELECT comment FROM reviews")).scalars().all() == ["kept"]
        assert db.session.execute(text("SELECT decision FROM predictions")).scalar() == "covid"
        assert db.session.execute(text("PRAGMA foreign_keys")).scalar() == 1  # enforced again afterwards


def test_make_run_answers_only_for_its_bind_address():
    """`make run` passes CXR_TRUSTED_HOSTS: no redirect or API Location is ever built from a client's Host."""
    plan = subprocess.run(
        ["make", "-n", "run", "HOST=10.1.2.3"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "CXR_BIND=10.1.2.3:8000 CXR_TRUSTED_HOSTS='[\"10.1.2.3\"]'" in plan, plan
    loopback = subprocess.run(["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    assert 'CXR_TRUSTED_HOSTS=\'["127.0.0.1", "localhost"]\'' in loopback, loopback
