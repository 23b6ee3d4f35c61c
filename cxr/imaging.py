"""Decode an uploaded or stored file into one grayscale image in [0, 1].

Every input the product accepts (PNG, JPEG, TIFF, DICOM) goes through `decode_image`, in training
and in serving alike, so that the model never sees pixels decoded two different ways.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cxr.errors import CorruptImage, InputError, NotAChestXray, UnsupportedFormat

MIN_SIDE = 128  # px on the short side; below this a chest X-ray is not readable
MAX_ASPECT = 3.0  # long side / short side; a chest film is close to square
MAX_PIXELS = 60_000_000  # checked on the header, before any pixel is decoded
RASTER_FORMATS = {"PNG", "JPEG", "TIFF"}
# Projection radiography modalities; CT, MR, US, NM, PT, MG (mammography) and others are refused.
RADIOGRAPH_MODALITIES = {"CR", "DX", "DR", "RG", "OT"}
CHEST_BODY_PARTS = ("CHEST", "THORAX", "LUNG", "TORSO", "PORT CHEST")

# Pillow's own bomb check warns (or raises) at its own limits; ours is stricter and says so clearly.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


@dataclass(frozen=True)
class DecodedImage:
    """A decoded radiograph: `pixels` is 2-D float32 in [0, 1], higher is brighter (bone is white)."""

    pixels: np.ndarray
    format: str
    colourfulness: float = 0.0
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


def decode_image(data: bytes) -> DecodedImage:
    """Decode PNG/JPEG/TIFF/DICOM bytes, or raise an `InputError` whose message says what is wrong."""
    if not data:
        raise CorruptImage("The file is empty.")
    if _looks_like_dicom(data):
        return _decode_dicom(data)
    return _decode_raster(data)


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """The [0, 1] image as 8-bit grayscale, for storage and display."""
    return np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)


def _looks_like_dicom(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


def _check_geometry(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise InputError(
            f"The image is {width}×{height} pixels, more than the {MAX_PIXELS // 1_000_000} megapixels accepted.",
            status=413,
        )
    short, long = min(width, height), max(width, height)
    if short < MIN_SIDE:
        raise NotAChestXray(
            f"The image is only {width}×{height} pixels; at least {MIN_SIDE} pixels on the short side are needed."
        )
    if long / short > MAX_ASPECT:
        raise NotAChestXray(
            f"The image is {width}×{height} pixels, an aspect ratio of {long / short:.1f}:1; "
            "a chest X-ray is close to square."
        )


def _decode_raster(data: bytes) -> DecodedImage:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"The image has more than {MAX_PIXELS // 1_000_000} megapixels.", status=413) from None
    except UnidentifiedImageError:
        raise UnsupportedFormat(
            "This file is not an image the service can read. Upload a PNG, JPEG, TIFF or DICOM chest X-ray."
        ) from None
    except OSError as exc:
        raise CorruptImage(f"The image could not be read: {exc}.") from None
    if image.format not in RASTER_FORMATS:
        raise UnsupportedFormat(
            f"{image.format} images are not accepted. Upload a PNG, JPEG, TIFF or DICOM chest X-ray."
        )
    if getattr(image, "n_frames", 1) > 1:
        raise NotAChestXray("The file holds several frames (an animation or a stack); upload a single X-ray image.")
    _check_geometry(*image.size)
    try:
        image.load()
        if image.format == "JPEG":
            image = ImageOps.exif_transpose(image)
        pixels, colourfulness = _pil_to_gray(image)
    except (OSError, SyntaxError, ValueError) as exc:
        raise CorruptImage(f"The image is truncated or corrupt and could not be decoded ({exc}).") from None
    return DecodedImage(pixels=pixels, format=image.format or "IMAGE", colourfulness=colourfulness)


def _pil_to_gray(image: Image.Image) -> tuple[np.ndarray, float]:
    """Grayscale float pixels and the colourfulness of the original (0 for grayscale inputs)."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _min_max(np.asarray(image, dtype=np.float32)), 0.0
    if mode == "1":
        image = image.convert("L")
    elif mode in ("P", "PA"):
        image = image.convert("RGBA")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        image = image.convert("RGB")
    if image.mode in ("RGBA", "LA"):
        # Transparent areas become black, as in the shared data's standardisation.
        background = Image.new(image.mode, image.size, (0, 255) if image.mode == "LA" else (0, 0, 0, 255))
        image = Image.alpha_composite(background, image) if image.mode == "RGBA" else _composite_la(image)
        image = image.convert("RGB" if image.mode == "RGBA" else "L")
    if image.mode == "RGB":
        rgb = np.asarray(image, dtype=np.float32)
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0, colourfulness(rgb)
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0, 0.0


def _composite_la(image: Image.Image) -> Image.Image:
    gray, alpha = (np.asarray(band, dtype=np.float32) for band in image.split())
    return Image.fromarray(np.rint(gray * alpha / 255.0).astype(np.uint8), mode="L")


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler and Süsstrunk's colourfulness metric on 0-255 RGB; near 0 for any grayscale film."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg = r - g
    yb = 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def _min_max(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values, dtype=np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def _decode_dicom(data: bytes) -> DecodedImage:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptImage(f"The DICOM file could not be read ({exc}).") from None
    modality = str(ds.get("Modality", "") or "").upper()
    body_part = str(ds.get("BodyPartExamined", "") or "").upper()
    if modality and modality not in RADIOGRAPH_MODALITIES:
        raise NotAChestXray(
            f"This DICOM file is a {modality} image; only chest radiographs (CR/DX) can be analysed."
        )
    if body_part and not any(part in body_part for part in CHEST_BODY_PARTS):
        raise NotAChestXray(
            f"This DICOM file shows the body part '{body_part.title()}'; only chest radiographs can be analysed."
        )
    if "PixelData" not in ds:
        raise NotAChestXray("This DICOM file holds no image (it may be a report or a structured document).")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise NotAChestXray("This DICOM file holds several frames; upload a single radiograph.")
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    _check_geometry(columns, rows)
    try:
        raw = ds.pixel_array
    except NotImplementedError:
        syntax = ds.file_meta.get("TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        raise UnsupportedFormat(
            f"This DICOM file uses the transfer syntax '{name}', which this installation cannot decode. "
            "Export it uncompressed (or as PNG) and upload again."
        ) from None
    except (ValueError, AttributeError, KeyError, TypeError, OSError, RuntimeError) as exc:
        raise CorruptImage(f"The DICOM pixel data could not be decoded ({exc}).") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if raw.ndim == 3 and photometric in ("RGB", "YBR_FULL", "YBR_FULL_422"):
        rgb = raw.astype(np.float32)
        return DecodedImage(
            pixels=_min_max(rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)),
            format="DICOM",
            colourfulness=colourfulness(_min_max(rgb) * 255.0),
            metadata={"modality": modality, "body_part": body_part},
        )
    if raw.ndim != 2:
        raise NotAChestXray("This DICOM file does not hold a single 2-D grayscale image.")
    values = apply_voi_lut(apply_modality_lut(raw, ds), ds).astype(np.float32)
    pixels = _min_max(values)
    if photometric == "MONOCHROME1":  # low values are white in MONOCHROME1
        pixels = 1.0 - pixels
    return DecodedImage(pixels=pixels, format="DICOM", metadata={"modality": modality, "body_part": body_part})
