"""`flask --app app check-storage [--clean]`: does every stored prediction have its image files, and does
every file in the upload folder belong to a stored prediction?

An upload writes its image files (film, heatmap, thumbnail; older rows have an overlay instead of the
heatmap) first and commits the row last, so a
worker that dies in between (a SIGKILL, an out-of-memory kill, a power cut) can leave files without a
row: orphans. They hold patient
images that nothing points to; `--clean` deletes those older than `--min-age` seconds (younger ones may
belong to an upload still in flight, whose row is about to be committed). A row whose files are missing
cannot be repaired by this command: it is reported (restore the files from a backup).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from sqlalchemy import select

from webapp.cli import needs_schema
from webapp.db import Prediction, db

FILE_COLUMNS = ("image_path", "thumbnail_path")
# NULL when the row has no such file: the depth for uploads that are not grayscale DICOMs; the heatmap for rows
# stored before it, which have an overlay, and the overlay for newer rows (rendered from the heatmap). A row
# with neither of those two lacks its Grad-CAM (`GRADCAM_COLUMNS`).
OPTIONAL_FILE_COLUMNS = ("heatmap_path", "overlay_path", "depth_path")
GRADCAM_COLUMNS = ("heatmap_path", "overlay_path")


@dataclass
class StorageReport:
    upload_folder: str
    rows: int = 0
    files: int = 0
    rows_missing_files: dict[int, list[str]] = field(default_factory=dict)  # row id → missing relative paths
    orphans: list[str] = field(default_factory=list)  # relative paths of files no row points to
    young_orphans: list[str] = field(default_factory=list)  # orphans younger than min_age: maybe in flight
    removed: list[str] = field(default_factory=list)
    removal_errors: list[str] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        """Every row has its files and every file (left after cleaning) has its row."""
        remaining = set(self.orphans) - set(self.removed)
        return not self.rows_missing_files and not remaining and not self.young_orphans

    def lines(self) -> list[str]:
        out = [f"Upload folder {self.upload_folder}: {self.files} file(s); database: {self.rows} prediction row(s)."]
        if self.rows_missing_files:
            out.append(f"{len(self.rows_missing_files)} row(s) lack files (restore them from a backup):")
            out += [f"  prediction {rid}: {', '.join(paths)}" for rid, paths in sorted(self.rows_missing_files.items())]
        if self.orphans:
            verb = "removed" if self.removed else "not removed (use --clean)"
            out.append(f"{len(self.orphans)} orphan file(s) without a row, {verb}:")
            out += [f"  {path}" for path in self.orphans[:50]]
            out += [f"  ... and {len(self.orphans) - 50} more"] if len(self.orphans) > 50 else []
        if self.young_orphans:
            out.append(
                f"{len(self.young_orphans)} file(s) without a row are younger than --min-age and were left "
                "alone (an upload may still be in flight); check again later:"
            )
            out += [f"  {path}" for path in self.young_orphans[:50]]
        out += [f"could not remove {error}" for error in self.removal_errors]
        out.append(
            "Consistent: every row has its files and every file has its row." if self.consistent else "NOT consistent."
        )
        return out


def check_storage(clean: bool = False, min_age: float = 300.0, app: Flask | None = None) -> StorageReport:
    """Compare the prediction rows with the files under UPLOAD_FOLDER; with `clean`, delete old orphans."""
    app = app or current_app._get_current_object()
    folder = Path(app.config["UPLOAD_FOLDER"])
    report = StorageReport(upload_folder=str(folder))
    referenced: set[str] = set()
    columns = [getattr(Prediction, name) for name in (*FILE_COLUMNS, *OPTIONAL_FILE_COLUMNS)]
    for row in db.session.execute(select(Prediction.id, *columns)):
        report.rows += 1
        missing = []
        for index, relative in enumerate(row[1:]):
            if not relative:
                if index < len(FILE_COLUMNS):
                    missing.append("(no path recorded)")
                continue
            referenced.add(relative)
            if not (folder / relative).is_file():
                missing.append(relative)
        recorded = dict(zip((*FILE_COLUMNS, *OPTIONAL_FILE_COLUMNS), row[1:]))
        if not any(recorded[name] for name in GRADCAM_COLUMNS):
            missing.append("(no heatmap or overlay recorded)")
        if missing:
            report.rows_missing_files[row[0]] = missing
    now = time.time()
    if folder.is_dir():
        for directory, _, names in os.walk(folder):
            for name in names:
                path = Path(directory, name)
                relative = path.relative_to(folder).as_posix()
                report.files += 1
                if relative in referenced:
                    continue
                try:
                    age = now - path.lstat().st_mtime
                except FileNotFoundError:  # removed meanwhile (a failed upload cleaning up)
                    continue
                if age < min_age:
                    report.young_orphans.append(relative)
                    continue
                report.orphans.append(relative)
                if clean:
                    try:
                        path.unlink()
                        report.removed.append(relative)
                    except OSError as exc:
                        report.removal_errors.append(f"{relative}: {exc.strerror or exc}")
    report.orphans.sort()
    report.young_orphans.sort()
    return report


@click.command("check-storage")
@with_appcontext
@needs_schema
@click.option("--clean", is_flag=True, help="Delete orphan files (files no prediction row points to).")
@click.option(
    "--min-age",
    type=float,
    default=300.0,
    show_default=True,
    help="Only treat files older than this many seconds as orphans (younger ones may be in flight).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check_storage_command(clean: bool, min_age: float, as_json: bool) -> None:
    """Check that every prediction row has its image files and every file has its row; exit 1 if not."""
    report = check_storage(clean=clean, min_age=min_age)
    if as_json:
        click.echo(json.dumps({**asdict(report), "consistent": report.consistent}, indent=1))
    else:
        for line in report.lines():
            click.echo(line)
    if not report.consistent:
        raise SystemExit(1)


def init_app(app: Flask) -> None:
    app.cli.add_command(check_storage_command)


def storage_status(app: Flask | None = None) -> dict[str, Any]:
    """Whether the upload folder takes a new file, and the space left on its file system."""
    app = app or current_app._get_current_object()
    folder = Path(app.config["UPLOAD_FOLDER"])
    status: dict[str, Any] = {"writable": False, "free_bytes": None, "error": None}
    probe = folder / f".probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        status["writable"] = True
    except OSError as exc:
        status["error"] = f"[Errno {exc.errno}] {exc.strerror}"
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        status["free_bytes"] = shutil.disk_usage(folder).free
    low = status["free_bytes"] is not None and status["free_bytes"] < int(app.config["STORAGE_MIN_FREE_BYTES"])
    if low and status["error"] is None:
        status["error"] = "less free space than STORAGE_MIN_FREE_BYTES"
    status["ok"] = status["writable"] and not low
    return status
