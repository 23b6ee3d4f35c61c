"""Patient data on disk is private to the service's user: 0600 files in 0700 folders."""

from __future__ import annotations

import stat
from pathlib import Path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_stored_films_database_and_folders_are_private(app, upload, tmp_path):
    upload()
    instance, uploads = Path(app.instance_path), Path(app.config["UPLOAD_FOLDER"])
    files = [p for p in uploads.rglob("*") if p.is_file()]
    assert len(files) == 3  # film, heatmap, thumbnail
    for path in files + list(tmp_path.glob("test.sqlite*")):
        assert mode(path) & 0o077 == 0, f"{path} is {oct(mode(path))}"
    for folder in [instance, uploads, *(p for p in uploads.rglob("*") if p.is_dir())]:
        assert mode(folder) & 0o077 == 0, f"{folder} is {oct(mode(folder))}"
