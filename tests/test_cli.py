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
