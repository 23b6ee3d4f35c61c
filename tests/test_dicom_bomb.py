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


def _compressed_header(
    rows: int, columns: int, samples: int = 1, bits: int = 16, syntax: str = "1.2.840.10008.1.2.5"
) -> bytes:
    """A small encapsulated DICOM (RLE by default) whose header declares a frame of the given size; its one
    fragment is junk, so any decoder that started would have to allocate the whole frame first."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = UID(syntax)
    ds = Dataset()
    ds.file_meta = meta
    ds.Modality, ds.BodyPartExamined = "DX", "CHEST"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, columns, samples
    ds.PhotometricInterpretation = "MONOCHROME2" if samples == 1 else "RGB"
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, min(bits, 12), min(bits, 12) - 1, 0
    ds.PixelData = encapsulate([b"\0" * 64])
    ds["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.90"])
def test_a_compressed_frame_too_large_to_decode_is_refused_from_its_header(syntax):
    """6000 × 6000 RGB at 16 bits (216 MB decoded) passes the pixel-count limit, not the decoded-size one."""
    data = _compressed_header(6000, 6000, samples=3, syntax=syntax)
    assert len(data) < 4096
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="MB once decoded") as refused:
            decode_image(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert refused.value.status == 413 and peak < 20 * 1024 * 1024


@pytest.mark.parametrize(("samples", "bits"), [(2, 16), (4, 8), (1, 64), (1, 12)])
def test_impossible_sample_layouts_are_refused_before_decoding(samples, bits):
    with pytest.raises(InputError, match="samples per pixel") as refused:
        decode_image(_compressed_header(512, 512, samples=samples, bits=bits))
    assert refused.value.status == 400
