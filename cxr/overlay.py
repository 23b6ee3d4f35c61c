"""The files stored for each prediction: the film (PNG), a small Grad-CAM heatmap (PNG) and a thumbnail (JPEG);
and the Grad-CAM overlay, rendered from the film and the heatmap when it is asked for."""

from __future__ import annotations

import io
import math
import struct
import zlib
from functools import lru_cache
from pathlib import Path

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


# How much of the colour the overlay shows where the map is at full weight (the film shows through the rest).
OVERLAY_ALPHA = 0.45

# The width of the fade at the crop box's edges, as a share of the box's shorter side: about one cell of
# the model's coarse map, wide enough to hide the box's outline, narrow enough to keep the map's edge cells.
FEATHER = 0.12


def edge_ramp(centres: np.ndarray, length: float, width: float) -> np.ndarray:
    """float32 weights at `centres` (positions along one side of the crop box, measured from its start,
    `length` long): 0 at and beyond its edges, rising smoothly (smoothstep) to 1 at `width` inside it."""
    distance = np.minimum(centres, np.float32(length) - centres)  # to the nearer edge; < 0 outside
    t = np.clip(distance / np.float32(max(width, 1.0)), 0.0, 1.0)
    return t * t * (np.float32(3.0) - np.float32(2.0) * t)


def overlay_rgb(
    pixels: np.ndarray,
    heatmap: np.ndarray,
    box: tuple[int, int, int, int],
    alpha: float = OVERLAY_ALPHA,
    gray: np.ndarray | None = None,
) -> np.ndarray:
    """RGB uint8: the 8-bit film blended with the 'jet' colormap where the map is strong, fading out
    towards the edges of the crop box (`edge_ramp`).

    Outside the crop box the map is zero, so the film is copied as it is; inside, the colour comes
    from the 256-entry table exactly as matplotlib indexes it (x · 256, 1.0 → 255), blended by Pillow
    through an 8-bit mask (within one level of the float computation, tests/test_overlay.py).
    `gray` may pass `to_uint8(pixels)` when the caller has it already.
    """
    out = Image.fromarray(to_uint8(pixels) if gray is None else gray).convert("RGB")
    strength, weight, corner = strength_and_weight(heatmap, box)
    if strength.size:
        index = np.minimum(strength * np.float32(256), 255).astype(np.uint8)
        mask = np.rint(np.float32(alpha) * weight * np.float32(255)).astype(np.uint8)
        _paste_jet(out, Image.fromarray(index), Image.fromarray(mask), corner)
    return np.asarray(out)


def strength_and_weight(
    heatmap: np.ndarray, box: tuple[int, int, int, int], scale: tuple[float, float] = (1.0, 1.0)
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """The model-resolution map resized bilinearly onto the crop `box` (film pixels), sampled on the film's
    pixel grid scaled by `scale` (rows, columns; ≤ 1): its strength (0-1) and the blend weight without the
    opacity, float32, over the pixels of that grid whose centres lie inside the box, and the (x, y) of the
    first of them.

    Weak activations stay mostly transparent (the square root), and the colour fades in from the box's
    edges (`edge_ramp`), so that the analysed region shows no hard tinted rectangle. Each sample is where
    its pixel's centre falls on the film, so a scaled grid holds the film-sized map at its own positions.
    """
    top, bottom, left, right = box
    if bottom <= top or right <= left:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32), (0, 0)
    scale_y, scale_x = scale
    # The grid's pixels with centres inside the box: (i + 0.5) / scale within [start, end).
    rows = range(math.ceil(top * scale_y - 0.5), math.ceil(bottom * scale_y - 0.5))
    columns = range(math.ceil(left * scale_x - 0.5), math.ceil(right * scale_x - 0.5))
    cells_y, cells_x = heatmap.shape
    y0, y1 = ((i / scale_y - top) * cells_y / (bottom - top) for i in (rows.start, rows.stop))
    x0, x1 = ((i / scale_x - left) * cells_x / (right - left) for i in (columns.start, columns.stop))
    # Pillow resizes only from inside the image: the edge cells repeated around it hold a scaled grid's
    # outermost samples (which take the edge cell's value, as Pillow's bilinear gives at the edge).
    pad = math.ceil(max(0.0, -y0, -x0, y1 - cells_y, x1 - cells_x))
    source = Image.fromarray(np.pad(heatmap.astype(np.float32), pad, mode="edge"), mode="F")
    region = source.resize((len(columns), len(rows)), Image.BILINEAR, box=(x0 + pad, y0 + pad, x1 + pad, y1 + pad))
    strength = np.clip(np.asarray(region, dtype=np.float32), 0.0, 1.0)
    fade = FEATHER * min(bottom - top, right - left)
    ramp_y = edge_ramp(_centres(rows, scale_y) - np.float32(top), bottom - top, fade)
    ramp_x = edge_ramp(_centres(columns, scale_x) - np.float32(left), right - left, fade)
    weight = np.sqrt(strength) * ramp_y[:, np.newaxis] * ramp_x[np.newaxis, :]
    return strength, weight, (columns.start, rows.start)


def _centres(pixels: range, scale: float) -> np.ndarray:
    """Where the centres of these pixels of a grid scaled by `scale` fall on the film, in film pixels."""
    return (np.arange(pixels.start, pixels.stop, dtype=np.float32) + np.float32(0.5)) / np.float32(scale)


def _paste_jet(out: Image.Image, index: Image.Image, mask: Image.Image, corner: tuple[int, int]) -> None:
    """Blend 'jet'[index] into the RGB image `out` at `corner` through the 8-bit `mask` (255: all colour)."""
    colour = index.copy()  # an "L" image of indices becomes a palette image over the same bytes
    colour.putpalette(jet_palette())  # mode "L" → "P"
    out.paste(colour.convert("RGB"), corner, mask)


@lru_cache(maxsize=1)
def jet_palette() -> list[int]:
    """`_jet()` as a Pillow palette: r, g, b of each of the 256 entries, rounded to 8 bits."""
    return np.rint(_jet().T).astype(np.uint8).ravel().tolist()


# The overlay is for looking at in a browser: a 2-4k px detector film is drawn at most this size, and
# more than half of it (the heatmap itself is 8 × 8; the film stays stored at full size), which saves
# most of the work on such films (bench/README.md, "In-process" and "Large films").
OVERLAY_MAX_SIDE = 1024


# The Grad-CAM heatmap is stored this small (its long side, in pixels): the model's map is 16 × 16, so 8
# pixels per cell hold it and a smooth edge fade, and the viewer, the overlay (`overlay_from_files`) and the
# PDF scale it up to the film. It costs under a millisecond at an upload (a 256 px file takes 4× the time
# to encode), where rendering and encoding a 2048 px overlay cost about 17 (bench/README.md, "Large films").
HEATMAP_SIDE = 128

# How each file is encoded: the film is kept lossless, and so is the heatmap (its two channels are numbers,
# not colours); the thumbnail and the overlay (rendered on request) are for looking at, and JPEG encodes
# them in a fraction of PNG's time (bench/README.md, "In-process").
FILE_FORMATS = {"image": "png", "heatmap": "png", "overlay": "jpg", "thumbnail": "jpg", "depth": "png"}
MIME_TYPES = {"png": "image/png", "jpg": "image/jpeg"}
JPEG_QUALITY = 90


def stored_files(
    image: DecodedImage, heatmap: np.ndarray, box: tuple[int, int, int, int], thumbnail_size: int
) -> dict[str, bytes]:
    """{"image", "heatmap", "thumbnail"} and, for a grayscale DICOM, "depth": the files kept for one
    prediction, encoded as `FILE_FORMATS` says."""
    gray = image.gray
    files = {
        "image": film_png(image),
        "heatmap": heatmap_png(heatmap, box, gray.shape),
        "thumbnail": jpeg_bytes(thumbnail(gray, thumbnail_size)),
    }
    if image.depth is not None:
        files["depth"] = depth_png(image.depth)
    return files


def heatmap_png(
    heatmap: np.ndarray, box: tuple[int, int, int, int], shape: tuple[int, int], side: int = HEATMAP_SIDE
) -> bytes:
    """The Grad-CAM heatmap as stored: an 8-bit RGB PNG covering the whole film (`shape`, height × width)
    at its aspect ratio, its long side `side` pixels (the film's own when that is smaller). R is the map's
    strength (0-255), resized bilinearly onto the crop `box` and zero outside it; G is the blend weight
    without the opacity (`strength_and_weight`, 0-255); B is 0.

    No alpha channel: browsers premultiply a canvas's alpha and would lose the low weights.
    """
    scale = min(1.0, side / max(shape))
    height, width = (max(1, round(n * scale)) for n in shape)
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    # Per axis: the file is stretched over the whole film, whose aspect ratio its rounded size only nears.
    strength, weight, (x, y) = strength_and_weight(heatmap, box, (height / shape[0], width / shape[1]))
    rgb[y : y + strength.shape[0], x : x + strength.shape[1], 0] = np.rint(strength * np.float32(255))
    rgb[y : y + weight.shape[0], x : x + weight.shape[1], 1] = np.rint(weight * np.float32(255))
    return png_bytes(rgb)


def overlay_from_files(film_png_path: Path, heatmap_png_path: Path, max_side: int = OVERLAY_MAX_SIDE) -> np.ndarray:
    """RGB uint8: the stored film (reduced as `display_film` does) blended with 'jet' through the stored
    heatmap (`heatmap_png`) scaled up to it, at `OVERLAY_ALPHA`: the Grad-CAM overlay the result page,
    the API, the PDF report and the DICOM secondary capture show (within a few levels of `overlay_rgb`
    on the same reduced film, tests/test_overlay.py)."""
    with Image.open(film_png_path) as film:
        small = display_film(film.convert("L"), max_side)
    with Image.open(heatmap_png_path) as stored:
        heat = stored.convert("RGB").resize(small.size, Image.BILINEAR)
    strength, weight, _ = heat.split()
    out = small.convert("RGB")
    _paste_jet(out, strength, weight.point([round(OVERLAY_ALPHA * v) for v in range(256)]), (0, 0))
    return np.asarray(out)


def display_film(film: Image.Image, max_side: int = OVERLAY_MAX_SIDE) -> Image.Image:
    """The 8-bit film for the overlay: reduced by the smallest integer factor that brings its long side to
    `max_side` pixels or fewer (the mean of each factor × factor block), when it is larger. Whole blocks
    take a tenth of the time of resizing to exactly `max_side`, and a JPEG for the screen shows no more."""
    factor = -(-max(film.size) // max_side)
    return film.reduce(factor) if factor > 1 else film


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

    A grayscale film or an RGB image (the heatmap) is written here rather than by Pillow: one PNG filter
    for every row ("up") and zlib level 1 encode a radiograph 3× faster than Pillow's per-row adaptive
    filters at level 3, for files 3-13 % larger (bench/README.md). Other arrays go through Pillow.
    """
    rgb = array.ndim == 3 and array.shape[2] == 3
    if array.dtype != np.uint8 or not (array.ndim == 2 or rgb) or 0 in array.shape:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG", compress_level=3)
        return buffer.getvalue()
    height, width = array.shape[:2]
    rows = np.ascontiguousarray(array).reshape(height, -1)
    scanlines = np.empty((height, rows.shape[1] + 1), dtype=np.uint8)
    scanlines[:, 0] = 2  # "up": each byte minus the one above (uint8 arithmetic wraps, as PNG wants)
    scanlines[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=scanlines[1:, 1:])
    header = struct.pack(">IIBBBBB", width, height, 8, 2 if rgb else 0, 0, 0, 0)  # colour type 2: RGB
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
