"""What the PACS side accepts: one DICOM instance's header read and screened before it is queued."""

from __future__ import annotations

import io
import warnings

import pydicom
from pydicom.dataset import Dataset

from cxr.errors import InputError
from cxr.imaging import NO_IMAGE, check_chest_header

# Projection radiographs from the PACS; everything else (CT, SR, presentation states, ...) is refused.
ACCEPTED_MODALITIES = {"CR", "DX"}


class Refused(Exception):
    """An instance the PACS side does not analyse; the message (logged) says why, without patient data."""


def read_header(data: bytes) -> Dataset:
    """The header of a DICOM Part 10 file (pixels not read); `Refused` when it cannot be parsed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's warnings quote element values
        try:
            return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        except Exception:  # noqa: BLE001 (a parser of network bytes fails in many ways; each means "malformed")
            raise Refused("malformed DICOM: its header could not be parsed") from None


def screen(header: Dataset) -> None:
    """Raise `Refused` unless the header is a CR or DX chest image with a SOP Instance UID."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        modality = str(header.get("Modality", "") or "").strip().upper()
        if modality not in ACCEPTED_MODALITIES:
            raise Refused(f"modality {modality or 'missing'}, not CR or DX")
        try:
            check_chest_header(header, ACCEPTED_MODALITIES)
        except InputError as exc:
            raise Refused(exc.message) from None
        if not header.get("Rows") or not header.get("Columns"):
            raise Refused(NO_IMAGE)
        if not str(header.get("SOPInstanceUID", "") or "").strip():
            raise Refused("no SOP Instance UID")
