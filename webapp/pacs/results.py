"""Results back to the PACS, in new series of the source image's study: a Comprehensive SR (highdicom) with
the decision, p(covid), the threshold, the model version and the indeterminate reason, referencing the
source image and the secondary capture; and a Secondary Capture of the Grad-CAM overlay with the
research-use notice burned in. Sent by C-STORE to PACS_DESTINATION ("AET@host:port") or by STOW-RS to
PACS_STOW_URL."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from webapp.db import Prediction
from webapp.overlays import overlay_rgb_of
from webapp.wording import decision_label, reason_text

log = logging.getLogger("cxr.pacs")
NOTICE = "Research use, not for diagnosis"
MANUFACTURER = "Chest X-ray triage (research software)"
SR_SERIES_NUMBER, SC_SERIES_NUMBER = 9901, 9902  # high, so that they sort after the modality's own series
# Concepts without a code in DICOM's or LOINC's vocabularies carry this private coding scheme.
SCHEME = "99CXRTRIAGE"
REPORT_TITLE = hd.sr.CodedConcept("18748-4", "LN", "Diagnostic imaging report")
DECISION = hd.sr.CodedConcept("DECISION", SCHEME, "Decision")
P_COVID = hd.sr.CodedConcept("PCOVID", SCHEME, "Probability of COVID-19 (calibrated)")
THRESHOLD = hd.sr.CodedConcept("THRESHOLD", SCHEME, "Operating threshold on p(COVID-19)")
REASON = hd.sr.CodedConcept("INDETREASON", SCHEME, "Indeterminate reason")
ALGORITHM_NAME = hd.sr.CodedConcept("111001", "DCM", "Algorithm Name")
ALGORITHM_VERSION = hd.sr.CodedConcept("111003", "DCM", "Algorithm Version")
COMMENT = hd.sr.CodedConcept("121106", "DCM", "Comment")
SOURCE = hd.sr.CodedConcept("260753009", "SCT", "Source")
OVERLAY = hd.sr.CodedConcept("OVERLAY", SCHEME, "Grad-CAM overlay (secondary capture)")
NO_UNITS = hd.sr.CodedConcept("1", "UCUM", "no units")


class DeliveryFailed(RuntimeError):
    """The PACS did not take a result; the job fails and is retried."""


def destination_configured(config: Mapping[str, Any]) -> bool:
    return bool(config.get("PACS_DESTINATION") or config.get("PACS_STOW_URL"))


def parse_destination(value: str) -> tuple[str, str, int]:
    """'AET@host:port' → (AE title, host, port); ValueError with a readable message otherwise."""
    title, _, address = value.partition("@")
    host, _, port = address.rpartition(":")
    if not title or not host or not port.isdigit() or len(title) > 16:
        raise ValueError(f"PACS_DESTINATION must be AET@host:port (AE title of at most 16 characters), not {value!r}")
    return title, host, int(port)


def secondary_capture(record: Prediction, source: Dataset, overlay: np.ndarray) -> hd.sc.SCImage:
    """The Grad-CAM overlay (RGB, `webapp.overlays.overlay_rgb_of`), with the notice burned into a band
    across its top."""
    picture = Image.fromarray(overlay).convert("RGB")  # a copy, drawn on
    band = max(24, picture.height // 20)
    draw = ImageDraw.Draw(picture)
    draw.rectangle((0, 0, picture.width, band), fill=(0, 0, 0))
    text = NOTICE.upper()
    size = int(band * 0.6)
    font = ImageFont.load_default(size=size)
    while size > 8 and draw.textlength(text, font=font) > picture.width * 0.95:  # fits on narrow images too
        size -= 1
        font = ImageFont.load_default(size=size)
    draw.text((picture.width * 0.025, (band - size) / 2), text, fill=(255, 255, 0), font=font)
    return hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=np.asarray(picture),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        # The source's orientation, else a frontal chest film's as displayed: columns to the patient's left,
        # rows to the feet.
        patient_orientation=tuple(source.get("PatientOrientation") or ()) or ("L", "F"),
        series_instance_uid=hd.UID(),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        series_description="CXR triage Grad-CAM (research use, not for diagnosis)",
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )


def structured_report(record: Prediction, source: Dataset, capture: Dataset) -> hd.sr.ComprehensiveSR:
    items: list[Dataset] = [
        hd.sr.TextContentItem(DECISION, decision_label(record.decision), relationship_type="CONTAINS"),
    ]
    if record.positive_probability is not None:
        items.append(hd.sr.NumContentItem(P_COVID, record.positive_probability, NO_UNITS, relationship_type="CONTAINS"))
    if record.threshold is not None:
        items.append(hd.sr.NumContentItem(THRESHOLD, record.threshold, NO_UNITS, relationship_type="CONTAINS"))
    reason = reason_text(record.decision, record.indeterminate_reasons)
    if reason:
        items.append(hd.sr.TextContentItem(REASON, reason, relationship_type="CONTAINS"))
    items += [
        hd.sr.TextContentItem(ALGORITHM_NAME, "CXR triage ensemble", relationship_type="CONTAINS"),
        hd.sr.TextContentItem(ALGORITHM_VERSION, record.model_version, relationship_type="CONTAINS"),
        hd.sr.TextContentItem(
            COMMENT, f"{NOTICE}. A clinician makes every clinical decision.", relationship_type="CONTAINS"
        ),
        hd.sr.ImageContentItem(SOURCE, source.SOPClassUID, source.SOPInstanceUID, relationship_type="CONTAINS"),
        hd.sr.ImageContentItem(OVERLAY, capture.SOPClassUID, capture.SOPInstanceUID, relationship_type="CONTAINS"),
    ]
    root = hd.sr.ContainerContentItem(REPORT_TITLE)
    root.ContentSequence = items
    return hd.sr.ComprehensiveSR(
        evidence=[source, capture],
        content=root,
        series_instance_uid=hd.UID(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description="CXR triage result (research use, not for diagnosis)",
    )


# Patient and study attributes of type 2 (present, may be empty) that the results copy from the source; a
# modality may leave them out, and highdicom needs them present.
TYPE_2_ATTRIBUTES = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def build(record: Prediction, source: Dataset, overlay: np.ndarray) -> tuple[Dataset, Dataset]:
    """The SR and the secondary capture for `record`, whose source image's header is `source`."""
    source = copy.deepcopy(source)
    for keyword in TYPE_2_ATTRIBUTES:
        if keyword not in source:
            setattr(source, keyword, "")
    capture = secondary_capture(record, source, overlay)
    return structured_report(record, source, capture), capture


def send(record: Prediction, source: Dataset) -> None:
    """Build the results and deliver them; `DeliveryFailed` when the PACS does not take both."""
    from flask import current_app

    config = current_app.config
    report, capture = build(record, source, overlay_rgb_of(record, Path(config["UPLOAD_FOLDER"])))
    if config.get("PACS_DESTINATION"):
        _c_store(config, [capture, report])
    else:
        _stow(config["PACS_STOW_URL"], [capture, report])
    log.info("Sent the SR and the secondary capture of prediction %d to the PACS", record.id)


def _c_store(config: Mapping[str, Any], datasets: list[Dataset]) -> None:
    from pynetdicom import AE

    title, host, port = parse_destination(config["PACS_DESTINATION"])
    ae = AE(ae_title=config["DICOM_AE_TITLE"])
    for dataset in datasets:
        ae.add_requested_context(dataset.SOPClassUID, ExplicitVRLittleEndian)
    for timeout in ("acse_timeout", "dimse_timeout", "network_timeout"):
        setattr(ae, timeout, float(config["DICOM_TIMEOUT_SECONDS"]))
    association = ae.associate(host, port, ae_title=title)
    if not association.is_established:
        raise DeliveryFailed(f"The PACS {title} at {host}:{port} did not accept an association.")
    try:
        for dataset in datasets:
            status = association.send_c_store(dataset)
            if not status or status.Status not in (0x0000, 0xB000, 0xB007, 0xB006):
                raise DeliveryFailed(
                    f"The PACS {title} refused a result (status 0x{status.Status:04X})."
                    if status
                    else f"The PACS {title} did not answer a C-STORE."
                )
    finally:
        association.release()


def _stow(url: str, datasets: list[Dataset]) -> None:
    from dicomweb_client.api import DICOMwebClient

    try:
        DICOMwebClient(url).store_instances(datasets)
    except Exception as exc:  # noqa: BLE001 (requests' and the client's errors alike mean "not delivered")
        raise DeliveryFailed(f"STOW-RS to {url} failed: {exc}") from exc
