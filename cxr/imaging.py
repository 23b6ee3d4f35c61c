"""Decode an uploaded or stored file into one grayscale image in [0, 1].

Every input the product accepts (PNG, JPEG, TIFF, DICOM) goes through `decode_image`, in training
and in serving alike, so that the model never sees pixels decoded two different ways.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from cxr import dicom_guard
from cxr.errors import CorruptImage, InputError, NotAChestXray, UnsupportedFormat

MIN_SIDE = 128  # px on the short side; below this a chest X-ray is not readable
MAX_ASPECT = 3.0  # long side / short side; a chest film is close to square
# Checked on the header, before any pixel is decoded. The largest chest detectors give ~4300² ≈ 18 MP;
# decoding 40 MP of RGB to float already takes about a gigabyte, so anything bigger is refused as a bomb.
MAX_PIXELS = 40_000_000
# Only these parsers ever see upload bytes: Pillow's other plugins (EPS, PSD, FITS, ...) are attack surface.
RASTER_FORMATS = ["PNG", "JPEG", "TIFF"]
ACCEPTED = "Upload a PNG, JPEG, TIFF or DICOM chest X-ray."
# File signatures, to tell a damaged PNG/JPEG/TIFF (400) from another format (415) and to name the latter.
SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"GIF8": "GIF",
    b"BM": "BMP",
    b"%PDF": "PDF",
    b"\x00\x00\x01\x00": "ICO",
}
# Projection radiography modalities; CT, MR, US, NM, PT, MG (mammography), XA, RF and others are refused.
RADIOGRAPH_MODALITIES = {"CR", "DX", "DR", "RG", "OT"}
CHEST_BODY_PARTS = ("CHEST", "THORAX", "TORAX", "LUNG", "TORSO")
UNINFORMATIVE_BODY_PARTS = {"", "UNKNOWN", "OTHER", "NONE"}
# The study metadata a prediction keeps (webapp.db.Prediction), by DICOM keyword, and the longest value
# each may have (the VR's limit); nothing else from a header is stored. Laterality: the image's, else the series'.
STUDY_FIELDS = {
    "study_instance_uid": ("StudyInstanceUID", 64),
    "series_instance_uid": ("SeriesInstanceUID", 64),
    "sop_instance_uid": ("SOPInstanceUID", 64),
    "accession_number": ("AccessionNumber", 16),
    "view_position": ("ViewPosition", 16),
    "laterality": ("ImageLaterality", 1),
    "modality": ("Modality", 16),
    "study_date": ("StudyDate", 8),
}
CODED_FIELDS = {"view_position", "laterality", "modality"}
NON_FRONTAL_VIEWS = {"LL", "RL", "LAT", "LATERAL", "LLO", "RLO"}  # DICOM ViewPosition: laterals, obliques

# A deflated DICOM data set is inflated (by cxr.dicom_guard, in chunks, before pydicom sees it) to at most
# what the largest accepted film needs (16-bit samples) plus room for its header.
MAX_INFLATED_BYTES = MAX_PIXELS * 2 + 16 * 1024 * 1024
# Every DICOM pixel decoder (native, RLE, the JPEG family, JPEG 2000, deflate) allocates the whole frame:
# rows × columns × samples × bytes per sample, known from the header before anything is decoded. A
# grayscale film takes at most two bytes a pixel; colour (three samples) is accepted as far as that budget.
MAX_DECODED_BYTES = MAX_PIXELS * 2
SAMPLES_PER_PIXEL = {1, 3}
BITS_ALLOCATED = {1, 8, 16, 32}

# Pillow's own bomb error (at twice its limit) then becomes our 413; between one and two times the
# limit it only warns, and `_check_geometry` refuses those itself with a clearer message.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


@dataclass(frozen=True)
class DecodedImage:
    """A decoded radiograph, higher is brighter (bone is white): `frame` as decoded, either 2-D float32 in
    [0, 1], or an 8-bit raster's own uint8 levels; `pixels` is it as float32 in [0, 1] (levels / 255) and
    `gray` as 8-bit levels, each made once and only when asked for. The model's preprocessing takes `frame`
    as it is (`cxr.preprocess`), so a 2-4k px 8-bit film is never turned into floats whole.

    `metadata` holds only what the history shows (DICOM modality, body part, view): never patient data.
    `identifiers` holds a DICOM file's PatientID and AccessionNumber (when present) so that the app can
    offer them as the reference for the clinician to confirm; nothing stores or logs them by itself.
    `study` holds the DICOM study metadata a prediction keeps (`STUDY_FIELDS`: its UIDs, accession number,
    view position, laterality, modality and study date); empty for other formats.
    `source_png` is the upload itself when it already holds exactly `gray`: an 8-bit grayscale PNG
    without transparency or EXIF rotation (its metadata chunks are still in it).
    `depth` is a grayscale DICOM's full bit depth for the viewer to window: its modality values (rescale
    slope and intercept applied) less their minimum, as uint16, in display polarity (MONOCHROME1 turned
    round); `depth_window` is the DICOM's own (center, width) in those units, or None.
    """

    frame: np.ndarray
    format: str
    colourfulness: float = 0.0
    metadata: dict[str, str] = field(default_factory=dict)
    identifiers: dict[str, str] = field(default_factory=dict, repr=False)
    study: dict[str, str] = field(default_factory=dict, repr=False)
    source_png: bytes | None = field(default=None, repr=False)
    depth: np.ndarray | None = field(default=None, repr=False)
    depth_window: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.frame.ndim != 2 or self.frame.dtype not in (np.float32, np.uint8):
            raise ValueError(f"a decoded frame is 2-D float32 or uint8, not {self.frame.dtype} {self.frame.shape}")

    @cached_property
    def pixels(self) -> np.ndarray:
        """float32 in [0, 1]."""
        return to_float(self.frame)

    @cached_property
    def gray(self) -> np.ndarray:
        """The pixels as 8-bit grayscale (`to_uint8`), made once for the gate and the stored files."""
        return self.frame if self.frame.dtype == np.uint8 else to_uint8(self.frame)

    @property
    def width(self) -> int:
        return int(self.frame.shape[1])

    @property
    def height(self) -> int:
        return int(self.frame.shape[0])


def decode_image(data: bytes) -> DecodedImage:
    """Decode PNG/JPEG/TIFF/DICOM bytes, or raise an `InputError` whose message says what is wrong."""
    if not data:
        raise CorruptImage("The file is empty.")
    dicom = _looks_like_dicom(data)
    try:
        return _decode_dicom(data) if dicom else _decode_raster(data)
    except InputError:
        raise
    except MemoryError:
        raise InputError("The image is too large to decode on this server.", status=413) from None
    except Exception as exc:  # noqa: BLE001
        # Parsers of untrusted bytes fail in many ways (struct.error, IndexError, ValueError, SyntaxError, ...);
        # each means the file is damaged. DICOM errors are not echoed: they can quote element values.
        kind, detail = ("DICOM", "") if dicom else (_signature(data) or "image", f" ({exc})")
        raise CorruptImage(f"The {kind} file is truncated or corrupt and could not be decoded{detail}.") from None


def to_float(frame: np.ndarray) -> np.ndarray:
    """A decoded frame (`DecodedImage.frame`) as float32 pixels in [0, 1]: 8-bit levels / 255 in one pass."""
    return np.divide(frame, np.float32(255), dtype=np.float32) if frame.dtype == np.uint8 else frame


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
        image = Image.open(io.BytesIO(data), formats=RASTER_FORMATS)
    except Image.DecompressionBombError:
        raise InputError(
            f"The image has more than {MAX_PIXELS // 1_000_000} megapixels, the most accepted.", status=413
        ) from None
    except UnidentifiedImageError:
        name = _signature(data)
        if name in RASTER_FORMATS:
            raise CorruptImage(f"The {name} file is corrupt: its header could not be read.") from None
        what = f"{name} files are not accepted." if name else "This file is not an image the service can read."
        raise UnsupportedFormat(f"{what} {ACCEPTED}") from None
    # Cameras write JPEGs with a preview as a second picture ("MPO"); the first is the photograph itself.
    if image.format != "MPO" and getattr(image, "n_frames", 1) > 1:
        raise NotAChestXray("The file holds several frames (an animation or a stack); upload a single X-ray image.")
    _check_geometry(*image.size)
    kind = "JPEG" if image.format == "MPO" else str(image.format)
    image.load()
    # Cameras and phones store the picture as the sensor saw it and say in EXIF how to turn it upright.
    upright = image.getexif().get(ExifTags.Base.Orientation, 1) in (0, 1)
    frame, colour = _pil_to_gray(image if upright else ImageOps.exif_transpose(image))
    # IHDR (always the first chunk) at bytes 24-25: bit depth 8, colour type 0 (grayscale).
    film = kind == "PNG" and upright and data[24:26] == b"\x08\x00" and "transparency" not in image.info
    return DecodedImage(frame=frame, format=kind, colourfulness=colour, source_png=data if film else None)


def _signature(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((kind for magic, kind in SIGNATURES.items() if data.startswith(magic)), "")


def _pil_to_gray(image: Image.Image) -> tuple[np.ndarray, float]:
    """The grayscale frame (8-bit levels, or float32 [0, 1] for deeper images) and the colourfulness of the
    original (0 for grayscale inputs)."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return _min_max(np.asarray(image, dtype=np.float32)), 0.0
    if "A" in image.getbands() or "transparency" in image.info:
        # Transparent areas become black, as in the shared data's standardisation.
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    if image.mode not in ("L", "1"):
        image = image.convert("RGB")  # palette, CMYK (Pillow undoes Adobe's inversion), YCbCr, ...
    levels = np.asarray(image if image.mode == "L" else image.convert("L"))
    return levels, (_colourfulness_of(image) if image.mode == "RGB" else 0.0)


def _colourfulness_of(image: Image.Image) -> float:
    # A global statistic: a thumbnail gives the same answer without a float copy of a 20 MP photo.
    small = image.copy()
    small.thumbnail((512, 512))
    return colourfulness(np.asarray(small, dtype=np.float32))


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler and Süsstrunk's colourfulness metric on 0-255 RGB; near 0 for any grayscale film."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg = r - g
    yb = 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def _min_max(values: np.ndarray) -> np.ndarray:
    if not np.isfinite(values).all():
        raise CorruptImage("The image holds invalid (NaN or infinite) pixel values.")
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values, dtype=np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def _check_decoded_size(ds, rows: int, columns: int) -> tuple[int, int]:
    """Refuse, from the header alone, pixel data whose decoded frame would exceed MAX_DECODED_BYTES;
    return the header's samples per pixel and bits allocated."""
    try:
        samples, bits = int(ds.get("SamplesPerPixel", 1) or 1), int(ds.get("BitsAllocated", 0) or 0)
    except (TypeError, ValueError):
        raise CorruptImage("This DICOM file's image header is not valid (samples per pixel, bits allocated).") from None
    if samples not in SAMPLES_PER_PIXEL or bits not in BITS_ALLOCATED:
        raise CorruptImage(
            f"This DICOM file declares {samples} samples per pixel of {bits} bits; a radiograph has 1 (or 3) "
            "samples of 8 or 16 bits."
        )
    decoded = rows * columns * samples * max(1, bits // 8)
    if decoded > MAX_DECODED_BYTES:
        raise InputError(
            f"This DICOM image would take {decoded // 1_000_000} MB once decoded, more than the "
            f"{MAX_DECODED_BYTES // 1_000_000} MB accepted. Export it as a single grayscale frame.",
            status=413,
        )
    return samples, bits


NO_IMAGE = "This DICOM file holds no image (it may be a report or a structured document)."


def check_chest_header(ds, modalities: set[str]) -> tuple[str, str, str]:
    """Raise `NotAChestXray` unless a DICOM header (pixels not needed) may be a frontal chest radiograph
    of one of `modalities` (an absent modality passes); returns its modality, body part and view."""
    modality = str(ds.get("Modality", "") or "").strip().upper()
    body_part = str(ds.get("BodyPartExamined", "") or "").strip().upper()
    view = str(ds.get("ViewPosition", "") or "").strip().upper()
    if modality and modality not in modalities:
        raise NotAChestXray(
            f"This DICOM file's modality is {modality}, not a radiograph; only chest X-rays (CR or DX) can be analysed."
        )
    if body_part not in UNINFORMATIVE_BODY_PARTS and not any(part in body_part for part in CHEST_BODY_PARTS):
        raise NotAChestXray(
            f"This DICOM file shows the body part '{body_part.title()}'; only chest radiographs can be analysed."
        )
    if view in NON_FRONTAL_VIEWS:
        raise NotAChestXray(
            f"This DICOM file is a lateral or oblique view ({view}); "
            "only frontal (PA or AP) chest X-rays can be analysed."
        )
    return modality, body_part, view


def _decode_dicom(data: bytes) -> DecodedImage:
    import pydicom
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder

    readable = dicom_guard.readable_file(data, MAX_INFLATED_BYTES)
    with warnings.catch_warnings():
        # pydicom warns about invalid values by quoting them, which could put a patient name in a log.
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(readable))
        del readable  # an inflated copy: the data set holds what it needs
        modality, body_part, view = check_chest_header(ds, RADIOGRAPH_MODALITIES)
        rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        if "PixelData" not in ds or not rows or not columns:
            raise NotAChestXray(NO_IMAGE)
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise NotAChestXray("This DICOM file holds several frames; upload a single radiograph.")
        _check_geometry(columns, rows)
        samples, bits = _check_decoded_size(ds, rows, columns)
        syntax = ds.file_meta.get("TransferSyntaxUID")
        if syntax is None:
            raise CorruptImage("This DICOM file does not say how its pixels are encoded (no transfer syntax).")
        try:
            available = get_decoder(syntax).is_available
        except NotImplementedError:
            available = False
        if not available:
            raise UnsupportedFormat(
                f"This DICOM file uses the transfer syntax '{syntax.name}', which this installation cannot decode. "
                "Export it uncompressed (or as PNG) and upload again."
            )
        dicom_guard.check_code_stream(ds, str(syntax), rows, columns, samples, bits)
        # The first frame only, whatever the offset table lists: NumberOfFrames above is 1.
        raw = get_decoder(syntax).as_array(ds, index=0)[0]
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
        metadata = {"modality": modality, "body_part": body_part, "view": view}
        identifiers = {
            name: value
            for name, value in (
                ("patient_id", str(ds.get("PatientID", "") or "").strip()),
                ("accession_number", str(ds.get("AccessionNumber", "") or "").strip()),
            )
            if value
        }
        study = study_metadata(ds)
        if photometric == "PALETTE COLOR":
            raw = apply_color_lut(raw, ds)
        if raw.ndim == 3 and raw.shape[-1] == 3:  # RGB (pydicom has already converted YBR to RGB)
            rgb = _min_max(raw.astype(np.float32))
            gray = _min_max(rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32))
            return DecodedImage(gray, "DICOM", colourfulness(rgb * 255.0), metadata, identifiers, study)
        if raw.ndim != 2:
            raise NotAChestXray("This DICOM file does not hold a single 2-D grayscale image.")
        # Rescale slope/intercept (or modality LUT), then the window or VOI LUT a radiologist would see.
        values = apply_modality_lut(raw, ds)
        pixels = _min_max(apply_voi_lut(values, ds).astype(np.float32))
        depth, depth_window = _full_depth(values, ds, photometric == "MONOCHROME1")
    if photometric == "MONOCHROME1":  # low values are white in MONOCHROME1
        pixels = 1.0 - pixels
    return DecodedImage(
        frame=pixels,
        format="DICOM",
        metadata=metadata,
        identifiers=identifiers,
        depth=depth,
        depth_window=depth_window,
        study=study,
    )


def _full_depth(values: np.ndarray, ds, inverted: bool) -> tuple[np.ndarray | None, tuple[float, float] | None]:
    """The modality values as uint16 from their minimum (display polarity), and the DICOM's first
    WindowCenter/Width in the same units; (None, None) when they span more than 16 bits."""
    low, high = float(np.min(values)), float(np.max(values))
    if high - low > 65535:
        return None, None
    depth = np.rint((high - values) if inverted else (values - low)).astype(np.uint16)
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return depth, None
    # Multi-valued in some files: the first pair is the default view.
    center = float(center[0] if isinstance(center, Sequence) and not isinstance(center, str) else center)
    width = float(width[0] if isinstance(width, Sequence) and not isinstance(width, str) else width)
    return depth, ((high - center) if inverted else (center - low), width)


def study_metadata(ds) -> dict[str, str]:
    """`STUDY_FIELDS` of a pydicom data set that are present and fit their length, stripped (codes
    upper-cased); a study date only when it is a real YYYYMMDD date."""
    values = {}
    for name, (keyword, longest) in STUDY_FIELDS.items():
        value = ds.get(keyword) or (ds.get("Laterality") if name == "laterality" else None)
        value = str(value or "").strip()
        if name in CODED_FIELDS:
            value = value.upper()
        if value and len(value) <= longest:
            values[name] = value
    if "study_date" in values:
        try:
            datetime.strptime(values["study_date"], "%Y%m%d")
        except ValueError:
            del values["study_date"]
    return values
