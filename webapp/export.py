"""The reviewed films as a training manifest (`flask --app app export-reviewed`).

Training splits by `patient_id` (training/data.py), so the export keeps two invariants that make one film
land in exactly one split of a retrain:

* one row per distinct film: predictions of the same upload bytes (sha256) are one film, written once and
  labelled by the reading of the most recently saved review among them (typical: covid, negative: normal,
  atypical or another finding: other; `webapp.readings.TRAINING_LABELS`); a film whose latest review is
  preliminary or reads "indeterminate" has no training label and is left out;
* one patient per connected group: a film uploaded under two references joins those references into one
  patient, so that its other films follow it into the same split.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import Select, func, select

from webapp.db import Prediction, Review, db, within_dates
from webapp.readings import FINAL, TRAINING_LABELS

# What `python -m training.train --data DIR/manifest.csv` and `training.evaluate` read (training/data.py).
EXPORT_COLUMNS = ["file", "label", "patient_id", "source"]
EXPORT_SOURCE = "local"


@dataclass
class Film:
    """The reviewed predictions of one upload's bytes, oldest first."""

    sha256: str
    predictions: list[Prediction] = field(default_factory=list)

    @property
    def label(self) -> str | None:
        """The training label of the most recently saved review of any of its predictions; None when that
        review is preliminary or its reading gives no label."""
        latest = max((p.latest_review for p in self.predictions), key=lambda review: (review.updated_at, review.id))
        return TRAINING_LABELS.get(latest.reading) if latest.status == FINAL else None

    @property
    def labels_disagree(self) -> bool:
        return len({TRAINING_LABELS.get(p.latest_review.reading) for p in self.predictions}) > 1


@dataclass
class ExportSummary:
    films: int = 0
    missing: int = 0  # films none of whose predictions has its stored file any more
    unlabelled: int = 0  # films whose latest review is preliminary or reads "indeterminate"
    repeated: list[Film] = field(default_factory=list)  # films uploaded more than once, each written once

    @property
    def disagreeing(self) -> list[Film]:
        return [film for film in self.repeated if film.labels_disagree]


def select_reviewed(since: date | None) -> Select:
    """Reviewed predictions, oldest first, narrowed to those whose latest review is from `since` on."""
    query = select(Prediction).where(Prediction.reviews.any()).order_by(Prediction.id)
    if since is not None:
        latest = select(func.max(Review.updated_at)).where(Review.prediction_id == Prediction.id).scalar_subquery()
        query = within_dates(query, latest, since, None)
    return query


def patient_key(record: Prediction) -> str:
    """The patient a prediction belongs to: its reference, or itself for a film without one."""
    return record.reference or f"prediction:{record.id}"


def films_of(records: Iterable[Prediction]) -> list[Film]:
    """The distinct films (by sha256) of `records`, in the order of their first prediction."""
    films: dict[str, Film] = {}
    for record in records:
        films.setdefault(record.sha256, Film(record.sha256)).predictions.append(record)
    return list(films.values())


def patient_ids(films: list[Film]) -> dict[str, str]:
    """Patient key → the patient_id of its group: keys joined by a shared film are one patient (union-find),
    named by the group's first key in sorted order with references before `prediction:<id>` keys."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]  # path halving
            key = parent[key]
        return key

    def preference(key: str) -> tuple[bool, str]:
        return key.startswith("prediction:"), key

    for film in films:
        keys = [patient_key(p) for p in film.predictions]
        for other in keys[1:]:
            first, second = root(keys[0]), root(other)
            if first != second:  # the preferred name becomes the root, so it names the group
                first, second = sorted((first, second), key=preference)
                parent[second] = first
    return {patient_key(p): root(patient_key(p)) for film in films for p in film.predictions}


def export_reviewed(out: Path, upload_folder: Path, since: date | None) -> ExportSummary:
    """Copy each reviewed film once into OUT/images/ and write OUT/manifest.csv (EXPORT_COLUMNS)."""
    films = films_of(db.session.scalars(select_reviewed(since)))
    patients = patient_ids(films)
    (out / "images").mkdir(parents=True, exist_ok=True)
    summary, rows = ExportSummary(), []
    for film in films:
        if film.label is None:
            summary.unlabelled += 1
            continue
        on_disk = [upload_folder / p.image_path for p in film.predictions if (upload_folder / p.image_path).is_file()]
        if not on_disk:
            summary.missing += 1
            continue
        name = f"images/{film.predictions[0].id}{on_disk[0].suffix}"
        with on_disk[0].open("rb") as source:
            write_replacing(out / name, lambda handle, source=source: shutil.copyfileobj(source, handle))
        rows.append([name, film.label, patients[patient_key(film.predictions[0])], EXPORT_SOURCE])
        if len(film.predictions) > 1:
            summary.repeated.append(film)
    manifest = io.StringIO(newline="")
    writer = csv.writer(manifest)
    writer.writerow(EXPORT_COLUMNS)
    writer.writerows(rows)
    write_replacing(out / "manifest.csv", lambda handle: handle.write(manifest.getvalue().encode("utf-8")))
    summary.films = len(rows)
    return summary


def write_replacing(path: Path, fill: Callable[[BinaryIO], object]) -> None:
    """Write `path` through a new temporary file beside it, renamed over it: whatever was at `path` (a
    symbolic link planted in a shared folder, say) is replaced, never followed and written through."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as opened:
            fill(opened)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
