"""A deflated DICOM is measured before pydicom inflates it: a compressed-content bomb is refused with
413 without the memory it would take, and an honest deflated film still decodes."""

from __future__ import annotations

import io
import subprocess
import sys
import tracemalloc
import zlib

import numpy as np
import pytest

from cxr.errors import InputError
from cxr.imaging import MAX_INFLATED_BYTES, decode_image
from tests.dicom_bombs import (
    DEFLATED,
    compressed_header,
    deflated_behind_undefined_meta,
    j2k_larger_than_its_header,
    jpeg_larger_than_its_header,
    more_frames_in_the_offset_table,
    rle_longer_than_its_frame,
)
from tests.helpers import dicom_bytes, synthetic_chest
from tools.common import ROOT


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


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.90"])
def test_a_compressed_frame_too_large_to_decode_is_refused_from_its_header(syntax):
    """6000 × 6000 RGB at 16 bits (216 MB decoded) passes the pixel-count limit, not the decoded-size one."""
    data = compressed_header(6000, 6000, samples=3, syntax=syntax)
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
        decode_image(compressed_header(512, 512, samples=samples, bits=bits))
    assert refused.value.status == 400


# -- Bombs behind a plausible header: what the decoder itself would allocate ----------------------------------
# Each is decoded in a fresh interpreter, whose peak resident memory (ru_maxrss, which counts the C decoders'
# own allocations that tracemalloc cannot see) is compared with its size before the decode.
PEAK_SCRIPT = """
import resource, sys
from cxr.errors import InputError
from cxr.imaging import decode_image
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    decode_image(data)
    status, message = 200, "decoded"
except InputError as exc:
    status, message = exc.status, exc.message
print(status, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024, message)
"""
BOMB_PEAK_MB = 64


def peak_of_decoding(data: bytes, tmp_path) -> tuple[int, int, str]:
    """(HTTP status, or 200 when decoded; megabytes added to the peak resident size; message)."""
    path = tmp_path / "upload.dcm"
    path.write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    status, peak, message = done.stdout.strip().splitlines()[-1].split(" ", 2)
    return int(status), int(peak), message


@pytest.mark.parametrize(
    ("bomb", "status", "message"),
    [
        (lambda: deflated_behind_undefined_meta(300), 400, "file meta information"),
        (jpeg_larger_than_its_header, 400, "compressed image is 20000×20000 pixels"),
        (j2k_larger_than_its_header, 400, "compressed image is 30000×30000 pixels"),
        (rle_longer_than_its_frame, 400, "more data than its header's frame"),
        (more_frames_in_the_offset_table, 200, "decoded"),  # its first frame only
    ],
    ids=["deflate-behind-undefined-meta", "jpeg-sof", "j2k-siz", "rle-segment", "offset-table-frames"],
)
def test_a_bomb_behind_a_plausible_header_is_decoded_or_refused_in_bounded_memory(bomb, status, message, tmp_path):
    data = bomb()
    assert len(data) < 4_000_000
    refused, peak, said = peak_of_decoding(data, tmp_path)
    assert peak < BOMB_PEAK_MB, f"{peak} MB added while refusing ({refused}: {said})"
    assert refused == status and message in said, said
