"""One queued instance analysed: the job both queues run (webapp.pacs.queue), inside an app context.

A job is idempotent, which is what makes "analysed once" hold when a job runs again (its worker died, the
PACS sent the instance twice): the prediction of a PACS instance is unique by SOP Instance UID
(webapp.db.Prediction), so a second run finds it and only sends the results if they have not gone yet.
"""

from __future__ import annotations

import logging

from flask import current_app
from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from cxr.errors import InputError
from webapp.analysis import create_prediction
from webapp.db import UPLOAD_ORIGIN, Prediction, db, utcnow
from webapp.pacs import results
from webapp.pacs.instances import Refused, read_header, screen

log = logging.getLogger("cxr.pacs")


def analyse_instance(data: bytes, origin: str) -> int | None:
    """Analyse one DICOM instance from `origin` (a calling AE title, or "DICOMweb") and send its results
    back; the prediction's id, or None when the instance is refused (logged with the reason)."""
    try:
        return _analyse(data, origin)
    finally:
        db.session.remove()  # a worker runs many jobs in one app context: each gets a fresh session


def _analyse(data: bytes, origin: str) -> int | None:
    try:
        header = read_header(data)
        screen(header)
    except Refused as exc:
        log.warning("Refused an instance from %s: %s", origin, exc)
        return None
    uid = str(header.SOPInstanceUID).strip()
    record = analysed(uid)
    if record is None:
        try:
            record = create_prediction(data, f"{uid}.dcm", origin=origin)
        except InputError as exc:
            log.warning("Refused instance %s from %s: %s", uid, origin, exc.message)
            return None
        except sa_exc.IntegrityError:  # another worker stored it first (the same instance sent twice)
            record = analysed(uid)
            if record is None:
                raise
            log.info("Instance %s from %s was analysed by another job", uid, origin)
        else:
            log.info("Analysed instance %s from %s: prediction %d (%s)", uid, origin, record.id, record.decision)
    if record.results_sent_at is None and results.destination_configured(current_app.config):
        results.send(record, header)
        record.results_sent_at = utcnow()
        db.session.commit()
    return record.id


def analysed(sop_instance_uid: str) -> Prediction | None:
    """The prediction of a PACS instance, if it has one."""
    return db.session.scalar(
        select(Prediction).where(Prediction.sop_instance_uid == sop_instance_uid, Prediction.origin != UPLOAD_ORIGIN)
    )
