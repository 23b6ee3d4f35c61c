"""The prediction service stores nothing half-way."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from cxr.errors import InputError
from cxr.gate import Refused
from tests.helpers import png_bytes
from webapp.analysis import create_prediction, display_name
from webapp.db import Prediction, db


def _stored(app) -> tuple[int, list]:
    with app.app_context():
        rows = db.session.scalar(db.select(db.func.count(Prediction.id)))
    folder = app.config["UPLOAD_FOLDER"]
    return rows, [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_failed_commit_removes_the_files(app, chest_png, monkeypatch):
    def fail():
        raise RuntimeError("disk full")

    with app.app_context():
        monkeypatch.setattr(db.session, "commit", fail)
        with pytest.raises(RuntimeError, match="disk full"):
            create_prediction(chest_png, "a.png")
        monkeypatch.undo()
    assert _stored(app) == (0, [])


def test_failed_write_removes_earlier_files(app, chest_png, monkeypatch):
    write_bytes = Path.write_bytes

    def fail_on_heatmap(self, data):
        if self.name.endswith("-heat.png"):
            raise OSError("no space left on device")
        return write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", fail_on_heatmap)
    with app.app_context(), pytest.raises(OSError):
        create_prediction(chest_png, "a.png")
    assert _stored(app) == (0, [])


def test_refused_image_stores_nothing(app):
    with app.app_context(), pytest.raises(Refused) as raised:
        create_prediction(png_bytes(np.full((256, 256), 200, np.uint8)), "flat.png")
    assert isinstance(raised.value, InputError) and raised.value.status == 422 and raised.value.reasons
    assert _stored(app) == (0, [])


def test_stored_prediction(app, chest_png):
    with app.app_context():
        record = create_prediction(chest_png, "C:\\scans\\x.png", reference="  R  ", note="")
        assert (record.filename, record.reference, record.note) == ("x.png", "R", None)
        assert record.sha256 == hashlib.sha256(chest_png).hexdigest() and record.elapsed_ms > 0
    rows, files = _stored(app)
    assert rows == 1 and len(files) == 3


@pytest.mark.parametrize(
    ("given", "shown"),
    [("a/b/c.png", "c.png"), ("..\\..\\x.dcm", "x.dcm"), ("", "upload"), (None, "upload"), ("x" * 300, "x" * 255)],
)
def test_display_name(given, shown):
    assert display_name(given) == shown
