"""JSON and CSV renderings of stored predictions."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from flask import url_for

from cxr.overlay import FILE_FORMATS
from webapp.db import Prediction, Review, ReviewEdit
from webapp.readings import READINGS
from webapp.triage import active_claim
from webapp.wording import decision_label, reason_text


def timestamp(value: datetime | None) -> str | None:
    return f"{value.isoformat(timespec='seconds')}Z" if value else None


def prediction_json(row: Prediction) -> dict[str, Any]:
    """The result fields; the CLI prints these for files it does not store."""
    return {
        "decision": row.decision,
        "decision_label": decision_label(row.decision),
        "indeterminate_reasons": row.indeterminate_reasons,
        "indeterminate_reason_text": reason_text(row.decision, row.indeterminate_reasons),
        "class": row.label,
        "probability": row.probability,
        "probabilities": row.probabilities,
        "cnn_probabilities": row.cnn_probabilities,
        "threshold": row.threshold,
        "ood_score": row.ood_score,
        "model_version": row.model_version,
        "elapsed_ms": row.elapsed_ms,
        "filename": row.filename,
        "sha256": row.sha256,
        "reference": row.reference,
        "note": row.note,
        "created": timestamp(row.created_at),
    }


def study_json(row: Prediction) -> dict[str, Any]:
    """The study metadata (DICOM header, or typed at upload) and where the film came from."""
    return {
        "study_instance_uid": row.study_instance_uid,
        "series_instance_uid": row.series_instance_uid,
        "sop_instance_uid": row.sop_instance_uid,
        "accession_number": row.accession_number,
        "view_position": row.view_position,
        "portable": row.portable,
        "laterality": row.laterality,
        "modality": row.modality,
        "study_date": row.study_date.isoformat() if row.study_date else None,
        "origin": row.origin,
        "results_sent": timestamp(row.results_sent_at) if row.results_sent_at else None,
    }


def review_json(review: Review) -> dict[str, Any]:
    """A clinician's current review; `edits` are its earlier versions, newest first."""
    return {
        "created": timestamp(review.created_at),
        "updated": timestamp(review.updated_at),
        "reading": review.reading,
        "reading_label": READINGS[review.reading],
        "status": review.status,
        "agrees_with_model": review.agrees,
        "comment": review.comment,
        "user": username(review),
        "edits": [edit_json(edit) for edit in review.edits],
    }


def edit_json(edit: ReviewEdit) -> dict[str, Any]:
    return {
        "saved": timestamp(edit.saved_at),
        "reading": edit.reading,
        "status": edit.status,
        "comment": edit.comment,
    }


def stored_json(row: Prediction, reviews: bool = False) -> dict[str, Any]:
    """A stored prediction for the API: its id, the result fields, the URLs of its pages and images, the latest
    review (whose reading is the clinician label) and, with `reviews`, every clinician's review."""
    data = {"id": row.id, **prediction_json(row), "user": username(row)}
    holder = active_claim(row)
    data["urgent"] = row.urgent
    data["claimed_by"] = holder.username if holder else None
    data["claimed_at"] = timestamp(row.claimed_at) if holder else None
    data["study"] = study_json(row)
    data["latest_review"] = review_json(row.latest_review) if row.latest_review else None
    data["url"] = url_for("results.detail", prediction_id=row.id, _external=True)
    for kind in ("image", "overlay", "thumbnail"):
        data[f"{kind}_url"] = image_url(row, kind, _external=True)
    data["depth_url"] = image_url(row, "depth", _external=True) if row.depth_path else None
    data["depth_window"] = row.depth_window
    if reviews:
        data["reviews"] = [review_json(review) for review in row.reviews]
    return data


def image_url(row: Prediction, kind: str, **options: Any) -> str:
    """The URL of a stored file ("image", "heatmap", "overlay", "thumbnail" or "depth"); its extension is
    the stored file's (rows from before the overlay and thumbnail became JPEGs keep their PNGs). The overlay
    of a row with a heatmap is rendered when asked for, in `FILE_FORMATS`' format."""
    stored = getattr(row, f"{kind}_path")
    extension = PurePosixPath(stored).suffix.lstrip(".") if stored else FILE_FORMATS[kind]
    return url_for("results.image_file", prediction_id=row.id, kind=kind, extension=extension, **options)


def username(row: Prediction | Review) -> str | None:
    """Who uploaded or reviewed it (None for rows from before accounts existed)."""
    return row.user.username if row.user is not None else None


def csv_safe(value: Any) -> Any:
    """Neutralise spreadsheet formulas in free text (CSV injection): prefix them with a quote."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def csv_rows(rows: Iterable[Prediction], classes: list[str]) -> Iterator[list[Any]]:
    """A header, then one row per prediction with every class's probabilities and the latest review's reading."""
    yield [
        "id", "created_utc", "user", "filename", "reference", "decision", "decision_label", "indeterminate_reasons",
        "predicted_class", "probability",
        *(f"p_{c}" for c in classes), *(f"cnn_p_{c}" for c in classes),
        "threshold", "ood_score", "model_version", "elapsed_ms", "sha256", "note",
        "reviews", "latest_reading", "latest_review_status", "latest_review_agrees_with_model",
    ]  # fmt: skip
    for row in rows:
        latest = row.latest_review
        yield [
            row.id, timestamp(row.created_at), username(row) or "", csv_safe(row.filename),
            csv_safe(row.reference or ""), row.decision, decision_label(row.decision),
            " ".join(row.indeterminate_reasons or ()), row.label, round(row.probability, 4),
            *(_rounded(row.probabilities.get(c)) for c in classes),
            *(_rounded(row.cnn_probabilities.get(c)) for c in classes),
            _rounded(row.threshold), round(row.ood_score, 4), row.model_version, row.elapsed_ms, row.sha256,
            csv_safe(row.note or ""), len(row.reviews),
            "" if latest is None else latest.reading,
            "" if latest is None else latest.status,
            "" if latest is None else ("yes" if latest.agrees else "no"),
        ]  # fmt: skip


def _rounded(value: float | None) -> float | str:
    return "" if value is None else round(value, 4)
