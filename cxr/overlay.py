"""The files stored for each prediction: the film (PNG), its Grad-CAM overlay and a thumbnail (JPEG)."""

from __future__ import annotations

import io
import struct
import zlib
from functools import lru_cache

import numpy as np
from matplotlib import colormaps
from PIL import Image

from cxr.imaging import DecodedImage, to_uint8


def heatmap_full_size(heatmap: np.ndarray, box: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    """The model-resolution map resized onto its crop box in an image of `shape`, zero elsewhere."""
    top, bottom, left, right = box
    resized = Image.fromarray(heatmap.astype(np.float32), mode="F").resize((right - left, bottom - top), Image.BILINEAR)
    full = np.zeros(shape, dtype=np.float32)
    full[top:bottom, left:right] = np.clip(np.asarray(resized), 0.0, 1.0)
    return full


@lru_cache(maxsize=1)
def _jet() -> np.ndarray:
    """matplotlib's 'jet' as a 3 × 256 float32 table on the 0-255 scale, one row per channel:
    the colours `colormaps["jet"](x)` gives."""
    return np.ascontiguousarray((colormaps["jet"](np.arange(256))[:, :3] * 255.0).T.astype(np.float32))


# The width of the fade at the crop box's edges, as a share of the box's shorter side: about one cell of
# the model's coarse map, wide enough to hide the box's outline, narrow enough to keep the map's edge cells.
FEATHER = 0.12


def edge_ramp(length: int, width: float) -> np.ndarray:
    """float32 weights along one side of the crop box: 0 at its edges, rising smoothly (smoothstep) to 1
    at `width` pixels inside it."""
    centres = np.arange(length, dtype=np.float32) + np.float32(0.5)
    distance = np.minimum(centres, np.float32(length) - centres)  # to the nearer edge
    t = np.clip(distance / np.float32(max(width, 1.0)), 0.0, 1.0)
    return t * t * (np.float32(3.0) - np.float32(2.0) * t)


def overlay_rgb(
    pixels: np.ndarray,
    heatmap: np.ndarray,
    box: tuple[int, int, int, int],
    alpha: float = 0.45,
    gray: np.ndarray | None = None,
) -> np.ndarray:
    """RGB uint8: the 8-bit film blended with the 'jet' colormap where the map is strong, fading out
    towards the edges of the crop box (`edge_ramp`).

    Outside the crop box the map is zero, so the film is copied as it is; inside, the colour comes
    from the 256-entry table exactly as matplotlib indexes it (x · 256, 1.0 → 255), blended by Pillow
    through an 8-bit mask (within one level of the float computation, tests/test_overlay.py).
    `gray` may pass `to_uint8(pixels)` when the caller has it already.
    """
    top, bottom, left, right = box
    out = Image.fromarray(to_uint8(pixels) if gray is None else gray).convert("RGB")
    if bottom <= top or right <= left:
        return np.asarray(out)
    size = (right - left, bottom - top)
    region = Image.fromarray(heatmap.astype(np.float32), mode="F").resize(size, Image.BILINEAR)
    strength = np.clip(np.asarray(region, dtype=np.float32), 0.0, 1.0)
    colour = Image.frombytes("P", size, np.minimum(strength * np.float32(256), 255).astype(np.uint8).tobytes())
    colour.putpalette(_jet_palette())
    # Weak activations stay mostly transparent, and the colour fades in from the box's edges, so that the
    # analysed region shows no hard tinted rectangle.
    fade = FEATHER * min(bottom - top, right - left)
    rows, columns = edge_ramp(bottom - top, fade), edge_ramp(right - left, fade)
    weight = np.float32(alpha) * np.sqrt(strength) * rows[:, np.newaxis] * columns[np.newaxis, :]
    out.paste(colour.convert("RGB"), (left, top), Image.fromarray(np.rint(weight * np.float32(255)).astype(np.uint8)))
    return np.asarray(out)


@lru_cache(maxsize=1)
def _jet_palette() -> list[int]:
    """`_jet()` as a Pillow palette: r, g, b of each of the 256 entries, rounded to 8 bits."""
    return np.rint(_jet().T).astype(np.uint8).ravel().tolist()


# The overlay is for looking at in a browser: a 2-4k px detector film is drawn at most this size, and
# more than half of it (the heatmap itself is 8 × 8; the film stays stored at full size), which saves
# most of the work on such films (bench/README.md, "In-process" and "Large films").
OVERLAY_MAX_SIDE = 1024


# How each stored file is encoded. The film is kept lossless; the overlay and thumbnail are for looking at,
# and JPEG encodes them in a fraction of PNG's time (bench/README.md, "In-process").
FILE_FORMATS = {"image": "png", "overlay": "jpg", "thumbnail": "jpg", "depth": "png"}
MIME_TYPES = {"png": "image/png", "jpg": "image/jpeg"}
JPEG_QUALITY = 90


def stored_files(
    image: DecodedImage, heatmap: np.ndarray, box: tuple[int, int, int, int], thumbnail_size: int
) -> dict[str, bytes]:
    """{"image", "overlay", "thumbnail"} and, for a grayscale DICOM, "depth": the files kept for one
    prediction, encoded as `FILE_FORMATS` says."""
    gray = image.gray
    files = {
        "image": film_png(image),
        "overlay": jpeg_bytes(display_overlay(image.pixels, heatmap, box, gray)),
        "thumbnail": jpeg_bytes(thumbnail(gray, thumbnail_size)),
    }
    if image.depth is not None:
        files["depth"] = depth_png(image.depth)
    return files


def depth_png(depth: np.ndarray) -> bytes:
    """A 16-bit grayscale PNG of a DICOM's full-depth values (`DecodedImage.depth`), lossless, for the viewer
    to window on its canvas."""
    buffer = io.BytesIO()
    Image.fromarray(depth.astype(np.uint16, copy=False)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def film_png(image: DecodedImage) -> bytes:
    """The film as stored: a lossless PNG of `image.gray`. An upload that already is one
    (`DecodedImage.source_png`) is kept as it came, less its metadata chunks, instead of being
    compressed again (bench/README.md "In-process")."""
    return image_chunks_only(image.source_png) if image.source_png else png_bytes(image.gray)


def display_overlay(
    pixels: np.ndarray,
    heatmap: np.ndarray,
    box: tuple[int, int, int, int],
    gray: np.ndarray | None = None,
    max_side: int = OVERLAY_MAX_SIDE,
) -> np.ndarray:
    """`overlay_rgb`, on the film reduced by the smallest integer factor that brings its long side to
    `max_side` pixels or fewer (the mean of each factor × factor block) when it is larger."""
    factor = -(-max(pixels.shape) // max_side)
    if factor <= 1:
        return overlay_rgb(pixels, heatmap, box, gray=gray)
    # The 8-bit film is reduced rather than the float pixels (a JPEG for the screen shows no more than 8
    # bits), by whole blocks: a tenth of the time of resizing to exactly `max_side`.
    small = np.asarray(Image.fromarray(to_uint8(pixels) if gray is None else gray).reduce(factor))
    top, bottom, left, right = (round(v / factor) for v in box)
    return overlay_rgb(small.astype(np.float32) / np.float32(255), heatmap, (top, bottom, left, right), gray=small)


def thumbnail(gray: np.ndarray, size: int) -> np.ndarray:
    image = Image.fromarray(gray)
    image.thumbnail((size, size), Image.BILINEAR)  # antialiased in Pillow; half the time of LANCZOS
    return np.asarray(image)


def jpeg_bytes(array: np.ndarray) -> bytes:
    """JPEG of a uint8 grayscale or RGB array, full chroma resolution so the colour map keeps its edges."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buffer.getvalue()


def png_bytes(array: np.ndarray) -> bytes:
    """Lossless PNG of a uint8 array.

    A grayscale film is written here rather than by Pillow: one PNG filter for every row ("up") and
    zlib level 1 encode a radiograph 3× faster than Pillow's per-row adaptive filters at level 3, for
    files 3-13 % larger (bench/README.md). Other arrays go through Pillow.
    """
    if array.dtype != np.uint8 or array.ndim != 2 or 0 in array.shape:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG", compress_level=3)
        return buffer.getvalue()
    height, width = array.shape
    rows = np.ascontiguousarray(array)
    scanlines = np.empty((height, width + 1), dtype=np.uint8)
    scanlines[:, 0] = 2  # "up": each byte minus the one above (uint8 arithmetic wraps, as PNG wants)
    scanlines[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=scanlines[1:, 1:])
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 1)),
            _chunk(b"IEND", b""),
        )
    )


# What a PNG needs to show its pixels. Every other chunk (text, EXIF, ICC profile, time, ...) is metadata,
# which can name a patient, and is not stored.
IMAGE_CHUNKS = (b"IHDR", b"IDAT", b"IEND")


def image_chunks_only(png: bytes) -> bytes:
    """A grayscale PNG file that decoded without error, with its image chunks only (checksums made anew)."""
    parts, position = [png[:8]], 8
    while position + 8 <= len(png):
        length, kind = struct.unpack(">I4s", png[position : position + 8])
        if kind in IMAGE_CHUNKS:
            parts.append(_chunk(kind, png[position + 8 : position + 8 + length]))
        if kind == b"IEND":
            break
        position += 12 + length
    return b"".join(parts)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
