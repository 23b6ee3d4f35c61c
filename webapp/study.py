"""How a prediction's study metadata and provenance are shown: the result page, the worklist and the PDF
report use the same facts, in the same words."""

from __future__ import annotations

from flask import current_app

from webapp.db import UPLOAD_ORIGIN, Prediction

VIEW_NAMES = {"PA": "PA (posteroanterior)", "AP": "AP (anteroposterior)", "LL": "lateral", "RL": "lateral"}
PORTABLE_WARNING = (
    "Portable AP film: COVID-19 models err most on these (bedside technique, projection and patient position "
    "change the picture). Read it with extra care."
)


def view_name(record: Prediction) -> str | None:
    if not record.view_position:
        return None
    return VIEW_NAMES.get(record.view_position, record.view_position.lower())


def origin_text(record: Prediction) -> str:
    """'Upload', or the PACS it came from: its calling AE title, or DICOMweb."""
    if record.origin == UPLOAD_ORIGIN:
        return "Upload"
    return f"PACS {record.origin}"


def study_facts(record: Prediction) -> list[tuple[str, str]]:
    """(label, value) for each piece of study metadata the prediction has, in reading order."""
    facts = [
        ("Study date", record.study_date.isoformat() if record.study_date else None),
        ("View", view_name(record)),
        ("Laterality", {"L": "left", "R": "right", "B": "both"}.get(record.laterality or "", record.laterality)),
        ("Modality", record.modality),
        ("Accession number", record.accession_number),
        ("Source", origin_text(record)),
        ("Study Instance UID", record.study_instance_uid),
        ("Series Instance UID", record.series_instance_uid),
        ("SOP Instance UID", record.sop_instance_uid),
    ]
    return [(label, value) for label, value in facts if value]


def viewer_url(record: Prediction) -> str | None:
    """The study in the PACS viewer, from PACS_VIEWER_URL (e.g. ".../viewer?StudyInstanceUIDs={study_uid}")."""
    template = current_app.config.get("PACS_VIEWER_URL")
    if not template or not record.study_instance_uid:
        return None
    return template.format(study_uid=record.study_instance_uid)
