"""A deflated DICOM is measured before pydicom inflates it: a compressed-content bomb is refused with
413 without the memory it would take, and an honest deflated film still decodes."""

from __future__ import annotations

import io
import tracemalloc
import zlib

import numpy as np
import pytest

from cxr.errors import InputError
from cxr.imaging import MAX_INFLATED_BYTES, decode_image
from tests.helpers import dicom_bytes, synthetic_chest

DEFLATED = "1.2.840.10008.1.2.1.99"


def _meta(file_meta) -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    buffer = DicomBytesIO()
    write_file_meta_info(buffer, file_meta, enforce_standard=True)
    return buffer.getvalue()


def deflated(gray: np.ndarray, padding: int = 0) -> bytes:
    """`gray` as a DICOM with the deflated transfer syntax; `padding` zero bytes of a private OB element
    go before the image, compressed without ever being held in memory whole."""
    import pydicom

    plain = dicom_bytes(gray)
    file_meta = pydicom.dcmread(io.BytesIO(plain)).file_meta
    dataset = plain[132 + len(_meta(file_meta)) :]  # explicit VR little endian, as deflate wraps it
    file_meta.TransferSyntaxUID = DEFLATED
    return b"\0" * 128 + b"DICM" + _meta(file_meta) + _compress(padding, dataset)


def _compress(padding: int, dataset: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = []
    if padding:
        # (0009,1001) OB: a private element, explicit VR little endian with a 4-byte length.
        out.append(compressor.compress(b"\x09\x00\x01\x10OB\x00\x00" + padding.to_bytes(4, "little")))
        chunk = b"\0" * (1 << 20)
        for _ in range(padding >> 20):
            out.append(compressor.compress(chunk))
    out.append(compressor.compress(dataset))
    out.append(compressor.flush())
    return b"".join(out)


def test_an_honest_deflated_film_decodes():
    gray = synthetic_chest(seed=3, size=256)
    image = decode_image(deflated(gray))
    assert image.format == "DICOM" and image.pixels.shape == gray.shape
    np.testing.assert_allclose(image.pixels, decode_image(dicom_bytes(gray)).pixels, atol=1e-6)


def test_a_deflate_bomb_is_refused_before_it_is_inflated():
    bomb = deflated(synthetic_chest(seed=4, size=256), padding=MAX_INFLATED_BYTES + (64 << 20))
    assert len(bomb) < 1_000_000  # about a megabyte on the wire
    tracemalloc.start()
    try:
        with pytest.raises(InputError) as refused:
            decode_image(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.status == 413 and "decompressed" in refused.value.message
    assert peak < 200 * 1024 * 1024, f"{peak / 2**20:.0f} MB held while refusing"


def test_the_upload_of_a_bomb_gets_413_and_stores_nothing(client):
    bomb = deflated(synthetic_chest(seed=5, size=256), padding=MAX_INFLATED_BYTES + (8 << 20))
    response = client.post("/api/v1/predictions", data={"file": (io.BytesIO(bomb), "bomb.dcm")})
    assert response.status_code == 413
    assert "decompressed" in response.get_json()["error"]
    assert client.get("/api/v1/predictions").get_json()["items"] == []
