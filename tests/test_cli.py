"""`flask predict` prints the API's JSON for files on disk, without storing them."""

from __future__ import annotations

import io
import json

from webapp.db import Prediction, db


def test_predict_prints_json_lines(runner, app, tmp_path, chest_png, bundle):
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    good.write_bytes(chest_png)
    bad.write_bytes(b"not an image")
    result = runner.invoke(args=["predict", str(good), str(bad)])
    assert result.exit_code == 1
    first, second = (json.loads(line) for line in result.output.splitlines())
    assert first["file"] == str(good) and first["class"] in bundle.classes
    assert set(first["probabilities"]) == set(first["cnn_probabilities"]) == set(bundle.classes)
    assert first["model_version"] == bundle.version and first["threshold"] == bundle.threshold
    assert second == {"file": str(bad), "error": second["error"], "status": 415}
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Prediction.id))) == 0


def test_predict_matches_the_api(runner, client, tmp_path, chest_png):
    path = tmp_path / "good.png"
    path.write_bytes(chest_png)
    result = runner.invoke(args=["predict", str(path)])
    assert result.exit_code == 0
    printed = json.loads(result.output)
    stored = client.post("/api/v1/predictions", data={"file": (io.BytesIO(chest_png), "good.png")}).get_json()
    for key in ("class", "probabilities", "cnn_probabilities", "threshold", "ood_score", "model_version", "sha256"):
        assert printed[key] == stored[key], key
    assert set(printed) - {"file"} <= set(stored)


def test_predict_needs_existing_files(runner):
    result = runner.invoke(args=["predict", "/no/such/file.png"])
    assert result.exit_code == 2 and "does not exist" in result.output


DATABASE_COMMANDS = [
    ["check-storage"],
    ["create-user", "newcomer"],
    ["create-token", "clinician"],
    ["export-reviewed", "--out", "{tmp}/export"],
]


def _invoke_all(app, tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_USER_PASSWORD", "a long enough password")
    runner = app.test_cli_runner()
    return [runner.invoke(args=[arg.format(tmp=tmp_path) for arg in args]) for args in DATABASE_COMMANDS]


def test_commands_before_init_db_say_so_and_exit_2(make_app, tmp_path, monkeypatch):
    database = tmp_path / "empty.sqlite"
    app = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{database}")
    for args, result in zip(DATABASE_COMMANDS, _invoke_all(app, tmp_path, monkeypatch)):
        assert result.exit_code == 2, (args, result.output)
        assert result.output == "Error: The database has no schema: run `flask --app app init-db` first.\n", args
    with app.app_context():
        assert db.inspect(db.engine).get_table_names() == []  # no command created anything
    assert not (tmp_path / "export").exists()


def test_commands_on_an_older_schema_say_so_and_exit_2(make_app, tmp_path, monkeypatch):
    import flask_migrate

    from webapp.db import MIGRATIONS

    app = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'old.sqlite'}")
    with app.app_context():
        flask_migrate.upgrade(directory=str(MIGRATIONS), revision="d7e2a9b3c614")
    for args, result in zip(DATABASE_COMMANDS, _invoke_all(app, tmp_path, monkeypatch)):
        assert result.exit_code == 2, (args, result.output)
        assert "schema is at migration d7e2a9b3c614" in result.output, args
        assert result.output.endswith("run `flask --app app init-db` first.\n"), args
    assert app.test_cli_runner().invoke(args=["init-db"]).exit_code == 0
    assert app.test_cli_runner().invoke(args=["check-storage"]).exit_code == 0


def test_commands_on_a_database_that_does_not_answer_exit_2(make_app, tmp_path, monkeypatch):
    app = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'no' / 'such' / 'folder.sqlite'}")
    for args, result in zip(DATABASE_COMMANDS, _invoke_all(app, tmp_path, monkeypatch)):
        assert result.exit_code == 2, (args, result.output)
        assert result.output.startswith("Error: The database does not answer (OperationalError: unable to open"), args
        assert "Traceback" not in result.output
