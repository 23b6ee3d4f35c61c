"""Fuzzing the decoder: whatever bytes arrive, `decode_image` returns an image or raises `InputError`.

Anything else (IndexError, struct.error, a pydicom ValueError, ...) would surface as a 500 page.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.uid import JPEG2000Lossless, RLELossless

from cxr.errors import InputError
from cxr.imaging import decode_image
from tests.upload_cases import dicom, dicom_jpeg_baseline, encode, gray, levels, mutations, radiograph

BASE = radiograph(128, 128)
SEEDS = {
    "png": encode(gray(BASE), "PNG"),
    "png16": encode(gray(BASE).convert("I;16"), "PNG"),
    "jpeg": encode(gray(BASE), "JPEG", quality=90),
    "jpeg-rgb": encode(gray(BASE).convert("RGB"), "JPEG", quality=90),
    "tiff": encode(gray(BASE), "TIFF"),
    "dicom": dicom(levels(BASE, 12), 12, WindowCenter=2000.0, WindowWidth=1000.0),
    "dicom-mono1-8": dicom(levels(BASE, 8), 8, "MONOCHROME1"),
    "dicom-rle": dicom(levels(BASE, 12), 12, syntax=RLELossless),
    "dicom-jpeg2000": dicom(levels(BASE, 16), 16, syntax=JPEG2000Lossless),
    "dicom-jpeg": dicom_jpeg_baseline(BASE),
}
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about every corrupt EXIF it skips
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def decodes_or_refuses(data: bytes) -> None:
    try:
        decoded = decode_image(data)
    except InputError as error:
        assert error.message and error.status in (400, 413, 415, 422)
        return
    assert decoded.pixels.ndim == 2 and np.isfinite(decoded.pixels).all()
    assert decoded.pixels.min() >= 0.0 and decoded.pixels.max() <= 1.0


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    decodes_or_refuses(data)


SIGNATURES = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"\0" * 128 + b"DICM"]


@FUZZ
@given(st.sampled_from(SIGNATURES), st.binary(max_size=2048))
def test_random_bytes_after_a_valid_signature(signature: bytes, rest: bytes) -> None:
    decodes_or_refuses(signature + rest)


@settings(FUZZ, max_examples=800)
@given(st.sampled_from(sorted(SEEDS)).flatmap(lambda name: mutations(SEEDS[name])))
def test_mutated_valid_files(data: bytes) -> None:
    decodes_or_refuses(data)
