"""Every kind of upload the service accepts or refuses, generated in memory from a base image.

One table serves the decode-level tests (tests/test_imaging.py, base: a synthetic film) and the
web-level ones (tests/test_upload_safety.py, base: a chest X-ray the model's gate accepts). An
accepted case carries the pixels the decoder must produce from the base; a refused one the HTTP
status and a fragment of the message the person must see.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pydicom
from hypothesis import strategies as st
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    MPEG2MPML,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

Base = np.ndarray  # 2-D float in [0, 1]


def radiograph(height: int = 160, width: int = 192) -> Base:
    """A synthetic 'film' (not square, so a transposed image is caught): a ramp, two dark 'lungs', a bright block."""
    y, x = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    image = 0.2 + 0.6 * x
    for cx in (0.3, 0.7):
        image = np.where(((x - cx) / 0.15) ** 2 + ((y - 0.55) / 0.3) ** 2 < 1, image * 0.4, image)
    image[: height // 8, : width // 8] = 1.0
    return image.astype(np.float32)


def u8(pixels: Base) -> np.ndarray:
    return np.rint(pixels * 255).astype(np.uint8)


def gray(base: Base) -> Image.Image:
    return Image.fromarray(u8(base), mode="L")


def as8(base: Base) -> np.ndarray:
    """What an 8-bit file of `base` decodes to."""
    return u8(base) / 255.0


def levels(base: Base, bits: int) -> np.ndarray:
    return np.rint(base * (2**bits - 1)).astype(np.uint8 if bits <= 8 else np.uint16)


def min_max(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    return (values - values.min()) / (values.max() - values.min())


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _saved(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def dicom(
    raw: np.ndarray,
    bits_stored: int,
    photometric: str = "MONOCHROME2",
    syntax: str = ExplicitVRLittleEndian,
    **elements,
) -> bytes:
    """A DICOM Part 10 file holding `raw`, with any further elements (Modality='CT', WindowCenter=...)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(
        entropy_srcs=["cxr-test-fixture"]
    )  # deterministic: hypothesis needs stable seeds
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.PatientName = "Doe^Jane"  # must never reach the metadata, a message or a log
    ds.PatientID = "123456"
    ds.Modality = "DX"
    ds.BodyPartExamined = "CHEST"
    ds.set_pixel_data(raw, photometric, bits_stored, generate_instance_uid=False)
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    if syntax in (RLELossless, JPEG2000Lossless):
        ds.compress(syntax, generate_instance_uid=False)
    elif syntax != ExplicitVRLittleEndian:  # a syntax nothing decodes: the decoder must refuse before reading
        ds.PixelData = encapsulate([b"\x00" * 64])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = syntax
    return _saved(ds)


def dicom_jpeg_baseline(base: Base) -> bytes:
    """An 8-bit JPEG wrapped in DICOM, as many CR systems export; pydicom decodes it with Pillow."""
    ds = pydicom.dcmread(io.BytesIO(dicom(levels(base, 8), 8)))
    ds.PixelData = encapsulate([encode(gray(base), "JPEG", quality=95)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    return _saved(ds)


def dicom_without_pixels(base: Base) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(dicom(levels(base, 8), 8)))
    del ds.PixelData
    return _saved(ds)


def windowed(raw: np.ndarray, slope: float, intercept: float, centre: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 linear window over the rescaled values, then min-max."""
    value = raw * slope + intercept
    return min_max(np.clip((value - (centre - 0.5)) / (width - 1) + 0.5, 0, 1))


# Rescaled 12-bit values span -1000..7190; the window keeps 5-95 % of that, so both ends clip a little.
SLOPE, INTERCEPT, CENTRE, WIDTH = 2.0, -1000.0, 3095.0, 7371.0


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge image: a decompression bomb must be refused before decoding."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def exif_rotated(base: Base) -> bytes:
    """Stored turned a quarter left, with EXIF orientation 6 (rotate 90° clockwise to view): upright when honoured."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(gray(np.rot90(base, k=1)), "JPEG", quality=95, exif=exif)


FRAME = 6  # px of transparent frame in the RGBA case; it becomes black, as transparency must


def framed(base: Base) -> np.ndarray:
    out = as8(base).copy()
    out[:FRAME], out[-FRAME:], out[:, :FRAME], out[:, -FRAME:] = 0, 0, 0, 0
    return out


def transparent_frame(base: Base) -> bytes:
    rgba = gray(base).convert("RGBA")
    alpha = np.zeros(base.shape, np.uint8)
    alpha[FRAME:-FRAME, FRAME:-FRAME] = 255
    rgba.putalpha(Image.fromarray(alpha))
    return encode(rgba, "PNG")


def palette(base: Base) -> Image.Image:
    return gray(base).convert("P", palette=Image.Palette.ADAPTIVE, colors=256)


def _flip(data: bytes, offset: int) -> bytes:
    broken = bytearray(data)
    broken[offset] ^= 0xFF
    return bytes(broken)


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Base], bytes]
    filename: str
    status: int | None = None  # None: accepted
    message: str = ""  # a fragment of the refusal message
    expected: Callable[[Base], np.ndarray] | None = None  # the pixels an accepted file decodes to
    tolerance: float = 1.5 / 255  # of the mean absolute difference to `expected`
    format: str = ""


LOSSY = 0.03  # JPEG at quality 95

ACCEPTED: list[Case] = [
    Case("png-gray-8", lambda b: encode(gray(b), "PNG"), "a.png", expected=as8, format="PNG"),
    Case(
        "png-gray-16",
        lambda b: encode(Image.fromarray(levels(b, 16)), "PNG"),
        "a.png",
        expected=lambda b: min_max(levels(b, 16)),
        tolerance=1e-4,
        format="PNG",
    ),
    Case("png-rgb", lambda b: encode(gray(b).convert("RGB"), "PNG"), "a.png", expected=as8, format="PNG"),
    Case("png-rgba", transparent_frame, "a.png", expected=framed, format="PNG"),
    Case("png-la", lambda b: encode(gray(b).convert("LA"), "PNG"), "a.png", expected=as8, format="PNG"),
    Case(
        "png-palette",
        lambda b: encode(palette(b), "PNG"),
        "a.png",
        expected=lambda b: np.asarray(palette(b).convert("L")) / 255.0,
        format="PNG",
    ),
    Case(
        "jpeg-gray",
        lambda b: encode(gray(b), "JPEG", quality=95),
        "a.jpg",
        expected=as8,
        tolerance=LOSSY,
        format="JPEG",
    ),
    Case(
        "jpeg-rgb",
        lambda b: encode(gray(b).convert("RGB"), "JPEG", quality=95),
        "a.jpg",
        expected=as8,
        tolerance=LOSSY,
        format="JPEG",
    ),
    Case(
        "jpeg-cmyk",
        lambda b: encode(gray(b).convert("CMYK"), "JPEG", quality=95),
        "a.jpg",
        expected=as8,
        tolerance=LOSSY,
        format="JPEG",
    ),
    Case("jpeg-exif-orientation", exif_rotated, "a.jpg", expected=as8, tolerance=LOSSY, format="JPEG"),
    # Cameras write JPEGs with a preview as a second picture (MPO): the first picture is the image.
    Case(
        "jpeg-mpo",
        lambda b: encode(gray(b), "MPO", save_all=True, append_images=[gray(b).reduce(2)]),
        "a.jpg",
        expected=as8,
        tolerance=LOSSY,
        format="JPEG",
    ),
    Case(
        "tiff-16",
        lambda b: encode(Image.fromarray(levels(b, 16)), "TIFF"),
        "a.tif",
        expected=lambda b: min_max(levels(b, 16)),
        tolerance=1e-4,
        format="TIFF",
    ),
    *(
        Case(
            f"dicom-mono2-{bits}bit",
            (lambda b, n=bits: dicom(levels(b, n), n)),
            "a.dcm",
            expected=(lambda b, n=bits: min_max(levels(b, n))),
            tolerance=1e-4,
            format="DICOM",
        )
        for bits in (8, 12, 16)
    ),
    Case(
        "dicom-mono1-12bit",
        lambda b: dicom(levels(1 - b, 12), 12, "MONOCHROME1"),
        "a.dcm",
        expected=lambda b: min_max(levels(b, 12)),
        tolerance=1e-3,
        format="DICOM",
    ),
    Case(
        "dicom-rescale-window",
        lambda b: dicom(
            levels(b, 12), 12, RescaleSlope=SLOPE, RescaleIntercept=INTERCEPT, WindowCenter=CENTRE, WindowWidth=WIDTH
        ),
        "a.dcm",
        expected=lambda b: windowed(levels(b, 12), SLOPE, INTERCEPT, CENTRE, WIDTH),
        tolerance=1e-3,
        format="DICOM",
    ),
    Case(
        "dicom-mono1-16bit-window",
        lambda b: dicom(levels(1 - b, 16), 16, "MONOCHROME1", WindowCenter=32768.0, WindowWidth=58000.0),
        "a.dcm",
        expected=lambda b: 1 - windowed(levels(1 - b, 16), 1, 0, 32768.0, 58000.0),
        tolerance=1e-3,
        format="DICOM",
    ),
    Case(
        "dicom-rle",
        lambda b: dicom(levels(b, 12), 12, syntax=RLELossless),
        "a.dcm",
        expected=lambda b: min_max(levels(b, 12)),
        tolerance=1e-4,
        format="DICOM",
    ),
    Case(
        "dicom-jpeg2000",
        lambda b: dicom(levels(b, 16), 16, syntax=JPEG2000Lossless),
        "a.dcm",
        expected=lambda b: min_max(levels(b, 16)),
        tolerance=1e-4,
        format="DICOM",
    ),
    Case(
        "dicom-jpeg-baseline",
        dicom_jpeg_baseline,
        "a.dcm",
        expected=lambda b: min_max(u8(b)),
        tolerance=LOSSY,
        format="DICOM",
    ),
]


def _small(b: Base, height: int, width: int) -> Image.Image:
    return gray(b).resize((width, height))


REFUSED: list[Case] = [
    Case("empty", lambda b: b"", "a.png", 400, "empty"),
    Case("not-an-image", lambda b: b"just some text, not a picture\n" * 20, "a.png", 415, "not an image"),
    Case("pdf", lambda b: b"%PDF-1.4\n" + b"\0" * 500, "a.pdf", 415, "PDF files are not accepted"),
    Case("gif", lambda b: encode(gray(b), "GIF"), "a.gif", 415, "GIF files are not accepted"),
    Case("bmp", lambda b: encode(gray(b), "BMP"), "a.bmp", 415, "BMP files are not accepted"),
    Case("webp", lambda b: encode(gray(b), "WEBP"), "a.webp", 415, "WEBP files are not accepted"),
    Case("png-truncated", lambda b: encode(gray(b), "PNG")[:600], "a.png", 400, "truncated"),
    # Offset 60 lies in the first IDAT's data (its CRC no longer matches); 38 in the chunk type after IHDR.
    Case("png-bad-crc", lambda b: _flip(encode(gray(b), "PNG"), 60), "a.png", 400, "corrupt"),
    Case("png-bad-chunk", lambda b: _flip(encode(gray(b), "PNG"), 38), "a.png", 400, "PNG file is corrupt"),
    Case("jpeg-truncated", lambda b: encode(gray(b), "JPEG")[:900], "a.jpg", 400, "truncated"),
    Case(
        "png-animated",
        lambda b: encode(gray(b), "PNG", save_all=True, append_images=[gray(1 - b)]),
        "a.png",
        422,
        "several frames",
    ),
    Case(
        "tiff-multipage",
        lambda b: encode(gray(b), "TIFF", save_all=True, append_images=[gray(b)]),
        "a.tif",
        422,
        "several frames",
    ),
    Case("png-too-small", lambda b: encode(_small(b, 100, 120), "PNG"), "a.png", 422, "at least 128 pixels"),
    Case("png-extreme-aspect", lambda b: encode(_small(b, 130, 800), "PNG"), "a.png", 422, "aspect ratio"),
    Case("png-bomb", lambda b: png_header_only(30_000, 30_000), "a.png", 413, "megapixels"),
    Case("png-bomb-moderate", lambda b: png_header_only(7_000, 7_000), "a.png", 413, "megapixels"),
    Case("dicom-ct", lambda b: dicom(levels(b, 12), 12, Modality="CT"), "a.dcm", 422, "modality is CT"),
    Case("dicom-mr", lambda b: dicom(levels(b, 12), 12, Modality="MR"), "a.dcm", 422, "modality is MR"),
    Case("dicom-hand", lambda b: dicom(levels(b, 12), 12, BodyPartExamined="HAND"), "a.dcm", 422, "'Hand'"),
    Case("dicom-lateral", lambda b: dicom(levels(b, 12), 12, ViewPosition="LL"), "a.dcm", 422, "frontal"),
    Case("dicom-multiframe", lambda b: dicom(np.stack([levels(b, 12)] * 3), 12), "a.dcm", 422, "several frames"),
    Case("dicom-no-pixels", dicom_without_pixels, "a.dcm", 422, "holds no image"),
    Case("dicom-truncated", lambda b: dicom(levels(b, 12), 12)[:-5000], "a.dcm", 400, "truncated or corrupt"),
    Case("dicom-too-small", lambda b: dicom(levels(b, 12)[:64, :64].copy(), 12), "a.dcm", 422, "at least 128"),
    Case("dicom-no-decoder", lambda b: dicom(levels(b, 8), 8, syntax=MPEG2MPML), "a.dcm", 415, "MPEG2"),
]

CASES = ACCEPTED + REFUSED


@st.composite
def mutations(draw: st.DrawFn, seed: bytes) -> bytes:
    """`seed` with a few bytes overwritten, a slice replaced, and/or cut short: damaged but plausible files."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(0, 6))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        start = draw(st.integers(0, len(data)))
        data[start : start + draw(st.integers(0, 64))] = draw(st.binary(max_size=64))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)
