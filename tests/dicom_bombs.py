"""DICOM files built to make a decoder allocate far more than their size: shared by the decode-level
peak-memory tests (tests/test_dicom_bomb.py) and the upload to the real gunicorn (tests/test_gunicorn.py)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np

DEFLATED = "1.2.840.10008.1.2.1.99"


def compressed_header(
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


def _element(group: int, element: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    """An explicit VR little endian element; `length` overrides the value's own (e.g. 0xFFFFFFFF)."""
    size = len(value) if length is None else length
    if vr in (b"OB", b"SQ", b"UN"):
        return struct.pack("<HH2s2xI", group, element, vr, size) + value
    return struct.pack("<HH2sH", group, element, vr, size) + value


def deflated_behind_undefined_meta(inflated_mb: int) -> bytes:
    """A deflated data set of `inflated_mb` MB of zeros behind a file meta whose (0002,0102) OB has an
    undefined length, closed by a sequence delimiter: walking the meta by lengths cannot find its end."""
    meta = b"".join(
        (
            _element(2, 0x0001, b"OB", b"\0\1"),
            _element(2, 0x0002, b"UI", b"1.2.840.10008.5.1.4.1.1.1.1\0"),
            _element(2, 0x0003, b"UI", b"1.2.3.4\0"),
            _element(2, 0x0010, b"UI", DEFLATED.encode() + b"\0"),
            _element(2, 0x0102, b"OB", b"\0" * 8 + b"\xfe\xff\xdd\xe0\0\0\0\0", length=0xFFFFFFFF),
        )
    )
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    header = b"\x09\x00\x01\x10OB\x00\x00" + (inflated_mb << 20).to_bytes(4, "little")  # (0009,1001) OB
    body = [compressor.compress(header)] + [compressor.compress(b"\0" * (1 << 20)) for _ in range(inflated_mb)]
    return b"\0" * 128 + b"DICM" + meta + b"".join(body) + compressor.flush()


def _encapsulated(rows: int, columns: int, syntax: str, pixel_data: bytes, frames: int = 1) -> bytes:
    data = compressed_header(rows, columns, bits=8, syntax=syntax)
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    ds.BitsStored, ds.HighBit, ds.NumberOfFrames = 8, 7, frames
    ds.PixelData = pixel_data
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _items(values: list[bytes]) -> bytes:
    """Encapsulated pixel data: each value an item (the first is the basic offset table), then the end."""
    return b"".join(b"\xfe\xff\x00\xe0" + struct.pack("<I", len(v)) + v for v in values) + b"\xfe\xff\xdd\xe0\0\0\0\0"


def jpeg_larger_than_its_header(side: int = 20000) -> bytes:
    """A 512 × 512 DICOM whose JPEG frame header (SOF) declares side × side pixels."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (512, 512), 100).save(buffer, "JPEG")
    stream = bytearray(buffer.getvalue())
    sof = stream.find(b"\xff\xc0")
    stream[sof + 5 : sof + 9] = struct.pack(">HH", side, side)
    return _encapsulated(512, 512, "1.2.840.10008.1.2.4.50", _items([b"", bytes(stream)]))


def j2k_larger_than_its_header(side: int = 30000) -> bytes:
    """A 512 × 512 DICOM whose JPEG 2000 code stream (SIZ) declares side × side pixels."""
    from openjpeg import encode

    stream = bytearray(encode(np.full((512, 512), 100, np.uint8)))
    assert stream[:4] == b"\xff\x4f\xff\x51"
    stream[8:16] = struct.pack(">II", side, side)  # Xsiz, Ysiz
    return _encapsulated(512, 512, "1.2.840.10008.1.2.4.90", _items([b"", bytes(stream)]))


def _rle_frame(runs: int) -> bytes:
    """One RLE segment of `runs` replicate runs (two bytes each, 128 decoded bytes each)."""
    return struct.pack("<II", 1, 64) + b"\0" * 56 + b"\x81\x00" * runs


def rle_longer_than_its_frame() -> bytes:
    """A 512 × 512 8-bit frame whose one RLE segment decodes to 128 MB (a 2 MB file)."""
    return _encapsulated(512, 512, "1.2.840.10008.1.2.5", _items([b"", _rle_frame(1 << 20)]))


def more_frames_in_the_offset_table(count: int = 200) -> bytes:
    """NumberOfFrames 1, but a basic offset table listing `count` RLE frames of 1024 × 1024."""
    frame = _rle_frame(1024 * 1024 // 128)
    offsets = b"".join(struct.pack("<I", n * (len(frame) + 8)) for n in range(count))
    return _encapsulated(1024, 1024, "1.2.840.10008.1.2.5", _items([offsets] + [frame] * count))
