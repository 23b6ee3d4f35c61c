"""Decode-level behaviour for every accepted and refused kind of upload (no model needed)."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image

from cxr.errors import InputError
from cxr.imaging import decode_image, to_uint8
from tests.upload_cases import ACCEPTED, REFUSED, Case, dicom, encode, gray, levels, radiograph

BASE = radiograph()


@pytest.mark.parametrize("case", ACCEPTED, ids=lambda c: c.id)
def test_accepted_uploads_decode_to_the_expected_grayscale(case: Case) -> None:
    decoded = decode_image(case.make(BASE))
    assert decoded.format == case.format
    assert decoded.pixels.dtype == np.float32 and decoded.pixels.ndim == 2
    assert decoded.pixels.min() >= 0.0 and decoded.pixels.max() <= 1.0
    expected = case.expected(BASE)
    assert decoded.pixels.shape == expected.shape
    assert np.abs(decoded.pixels - expected).mean() < case.tolerance
    assert decoded.colourfulness < 1.0  # every accepted sample is grayscale, whatever its colour model


@pytest.mark.parametrize("case", ACCEPTED, ids=lambda c: c.id)
def test_the_8_bit_film_is_the_decoders_own_levels_exactly(case: Case) -> None:
    """The 8-bit film the gate and the stored files use is `to_uint8(pixels)` whichever way it is made: from
    an 8-bit raster's decoded levels (not converted twice) or from the pixels (16-bit, DICOM)."""
    decoded = decode_image(case.make(BASE))
    assert decoded.gray.dtype == np.uint8
    np.testing.assert_array_equal(decoded.gray, to_uint8(decoded.pixels))
    eight_bit_raster = case.format in ("PNG", "JPEG") and not case.id.endswith("-16")
    # An 8-bit raster is kept as its levels; its float pixels are made only when asked for, as levels / 255.
    assert decoded.frame.dtype == (np.uint8 if eight_bit_raster else np.float32)
    np.testing.assert_array_equal(
        decoded.pixels, decoded.frame.astype(np.float32) / np.float32(255 if eight_bit_raster else 1)
    )


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("case", REFUSED, ids=lambda c: c.id)
def test_refused_uploads_raise_a_clear_input_error(case: Case) -> None:
    with pytest.raises(InputError) as caught:
        decode_image(case.make(BASE))
    assert caught.value.status == case.status
    assert case.message.lower() in caught.value.message.lower()


def test_colour_image_decodes_with_its_colourfulness() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (*BASE.shape, 3), dtype=np.uint8)
    assert decode_image(encode(Image.fromarray(rgb), "PNG")).colourfulness > 50


def test_dicom_metadata_keeps_only_modality_body_part_and_view() -> None:
    decoded = decode_image(dicom(levels(BASE, 12), 12, ViewPosition="PA"))
    assert decoded.metadata == {"modality": "DX", "body_part": "CHEST", "view": "PA"}
    assert "Doe" not in repr(decoded) and "123456" not in repr(decoded)


def test_dicom_messages_never_quote_patient_data() -> None:
    ds = pydicom.dcmread(io.BytesIO(dicom(levels(BASE, 12), 12)))
    ds.PatientName, ds.Modality = "Secret^Name", "CT"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    for payload in (buffer.getvalue(), buffer.getvalue()[:-3000], buffer.getvalue()[:400]):
        with pytest.raises(InputError) as caught:
            decode_image(payload)
        assert "Secret" not in caught.value.message


def test_eight_bit_png_reaches_the_model_unscaled() -> None:
    # The training PNGs are 8-bit: their values must arrive unchanged, only divided by 255.
    decoded = decode_image(encode(gray(BASE), "PNG"))
    assert np.array_equal(np.rint(decoded.pixels * 255).astype(np.uint8), np.asarray(gray(BASE)))
