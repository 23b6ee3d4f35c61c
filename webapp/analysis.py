"""Analysing an upload: decode → model → gate, then store its images and its row atomically."""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath

from flask import abort, current_app, has_request_context, request
from flask_login import current_user
from sqlalchemy import select

from cxr.bundle import ModelOutput
from cxr.decision import POSITIVE_CLASS
from cxr.gate import GateResult, Refused, assess
from cxr.imaging import DecodedImage, decode_image
from cxr.overlay import FILE_FORMATS, stored_files
from webapp import audit
from webapp.db import UPLOAD_ORIGIN, Prediction, db, utcnow
from webapp.model_service import model_service


@dataclass(frozen=True)
class Analysis:
    image: DecodedImage
    output: ModelOutput
    gate: GateResult
    sha256: str
    elapsed_ms: float  # decoding, model and gate together


def analyse(data: bytes) -> Analysis:
    """Decode and predict one upload; raises an `InputError` (e.g. `Refused`) the client can act on."""
    started = time.perf_counter()
    image = decode_image(data)
    output = model_service.bundle.predict(image.frame)
    gate = assess(image, output, model_service.bundle.gate)
    if not gate.accepted:
        raise Refused(gate.reasons)
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    return Analysis(image, output, gate, hashlib.sha256(data).hexdigest(), elapsed_ms)


def build_record(
    analysis: Analysis, filename: str, reference: str | None = None, note: str | None = None
) -> Prediction:
    """An unsaved row for `analysis`; its image paths are still empty (its overlay is rendered from the film
    and the heatmap when asked for: no overlay file)."""
    output = analysis.output
    return Prediction(
        created_at=utcnow(),
        filename=display_name(filename),
        sha256=analysis.sha256,
        image_path="",
        thumbnail_path="",
        label=output.label,
        decision=output.decision,
        indeterminate_reasons=list(output.indeterminate_reasons),
        depth_window=_window(analysis.image.depth_window),
        probabilities=output.probabilities,
        positive_probability=output.probabilities.get(POSITIVE_CLASS),
        cnn_probabilities=output.cnn_probabilities,
        threshold=output.threshold,
        model_version=output.model_version,
        elapsed_ms=round(analysis.elapsed_ms, 1),
        ood_score=analysis.gate.score,
        reference=(reference or "").strip() or None,
        note=(note or "").strip() or None,
        reviews=[],  # known to be none: the answer's review list needs no query
    )


def _window(window: tuple[float, float] | None) -> dict[str, float] | None:
    return None if window is None else {"center": window[0], "width": window[1]}


def create_prediction(
    data: bytes,
    filename: str,
    reference: str | None = None,
    note: str | None = None,
    *,
    idempotency_key: str | None = None,
    origin: str = UPLOAD_ORIGIN,
    typed: dict[str, object] | None = None,
) -> Prediction:
    """Analyse an upload (or an instance from the PACS, `origin` naming where it came from) and store it:
    its files under generated names, then the row.

    The study metadata comes from a DICOM header; `typed` (view_position, study_date: what a clinician
    typed for a PNG or JPEG) fills what the header does not say.

    On any failure the files written so far are removed and the session rolled back. A refusal by the
    out-of-distribution gate is counted in the audit trail (per model version) for monitoring.
    The row's `suggested_reference` carries a DICOM header's identifiers when no reference was given.
    `idempotency_key` (the API client's) is stored with the row, unique per user: a second row with the same
    key raises IntegrityError, with nothing of it left behind.
    """
    with model_service.analysis_slot():  # the decoded film and its encodings exist only inside a slot
        try:
            analysis = analyse(data)
        except Refused:
            audit.record(audit.UPLOAD_REFUSED, target=f"model:{model_service.bundle.version}", detail=f"via {_via()}")
            db.session.commit()
            raise
        files = stored_files(
            analysis.image, analysis.output.heatmap, analysis.output.box, int(current_app.config["THUMBNAIL_SIZE"])
        )
    record = build_record(analysis, filename, reference, note)
    record.idempotency_key = idempotency_key
    record.origin = origin
    set_study(record, analysis.image.study, typed or {})
    if record.reference is None and analysis.image.identifiers:
        record.suggested_reference = dict(analysis.image.identifiers)
    folder = Path(current_app.config["UPLOAD_FOLDER"])
    stem = f"{record.created_at:%Y/%m}/{uuid.uuid4().hex}"
    suffixes = {"image": "", "heatmap": "-heat", "thumbnail": "-thumb", "depth": "-depth"}
    written: list[Path] = []
    try:
        for kind, content in files.items():
            relative = f"{stem}{suffixes[kind]}.{FILE_FORMATS[kind]}"
            path = folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            written.append(path)
            path.write_bytes(content)
            setattr(record, f"{kind}_path", relative)
        if has_request_context() and request.blueprint and current_user.is_authenticated:
            record.user_id = current_user.id
        db.session.add(record)
        db.session.flush()  # the id, for the audit entry committed with the row
        audit.record(audit.UPLOAD, target=f"prediction:{record.id}", detail=f"via {_via()}")
        db.session.commit()
    except BaseException:
        db.session.rollback()
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return record


def find_duplicate(data: bytes) -> Prediction | None:
    """The newest stored prediction of exactly these bytes (the same SHA-256), if any: an upload of a film
    already analysed links to it instead of storing a silent copy (unless the clinician forces a new one)."""
    digest = hashlib.sha256(data).hexdigest()
    query = select(Prediction).where(Prediction.sha256 == digest).order_by(Prediction.id.desc()).limit(1)
    return db.session.scalars(query).first()


def record_duplicate(record: Prediction) -> None:
    """Audit an upload that led to the existing `record` (nothing stored): a view of it, and commit."""
    audit.record(audit.VIEW, target=f"prediction:{record.id}", detail=f"duplicate upload via {_via()}")
    db.session.commit()


def set_study(record: Prediction, header: dict[str, str], typed: dict[str, object]) -> None:
    """Copy a DICOM header's study metadata (cxr.imaging.STUDY_FIELDS) onto `record`; what the header
    lacks is taken from `typed` (a view position and a study date given at upload)."""
    for name, value in header.items():
        setattr(record, name, datetime.strptime(value, "%Y%m%d").date() if name == "study_date" else value)
    for name in ("view_position", "study_date"):
        if getattr(record, name) is None and typed.get(name):
            setattr(record, name, typed[name])


MAX_REFERENCE = 128


def reference_problem(reference: str) -> str | None:
    """Why `reference` (already stripped) cannot be a study's reference, or None: 1 to MAX_REFERENCE
    printable characters (no NUL, line breaks or other control characters, no lone surrogates), as it is
    shown, searched and exported."""
    if not reference or len(reference) > MAX_REFERENCE:
        return f"The reference must be 1 to {MAX_REFERENCE} characters."
    if not reference.isprintable():
        return "The reference may hold only printable characters (no control characters or line breaks)."
    return None


def confirm_reference(record: Prediction, reference: str | None) -> None:
    """Set the reference of a prediction stored without one (a DICOM header's identifier the clinician
    confirmed) and commit it with its audit entry. Only its uploader or an administrator may, and only
    once: 403 for anyone else, 409 when it has one already, 400 when the value is not usable.
    The audit entry does not repeat the identifier."""
    if not (current_user.is_admin or (record.user_id is not None and record.user_id == current_user.id)):
        abort(403, "Only the clinician who uploaded this study, or an administrator, may set its reference.")
    if record.reference is not None:
        abort(409, "This prediction has a reference already; it is not replaced.")
    reference = (reference or "").strip()
    problem = reference_problem(reference)
    if problem:
        abort(400, problem)
    record.reference = reference
    audit.record(audit.REFERENCE_SET, target=f"prediction:{record.id}", detail="confirmed after upload")
    db.session.commit()


def _via() -> str:
    return (request.blueprint if has_request_context() else None) or "a script"


def display_name(filename: str | None) -> str:
    """The client's file name without any directory part, for display only (never a path)."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    return name[:255] or "upload"
