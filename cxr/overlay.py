"""The PNGs stored for each prediction: the film, its Grad-CAM overlay and a thumbnail."""

from __future__ import annotations

import io
import struct
import zlib
from functools import lru_cache

import numpy as np
from matplotlib import colormaps
from PIL import Image

from cxr.imaging import to_uint8


def heatmap_full_size(heatmap: np.ndarray, box: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    """The model-resolution map resized onto its crop box in an image of `shape`, zero elsewhere."""
    top, bottom, left, right = box
    resized = Image.fromarray(heatmap.astype(np.float32), mode="F").resize((right - left, bottom - top), Image.BILINEAR)
    full = np.zeros(shape, dtype=np.float32)
    full[top:bottom, left:right] = np.clip(np.asarray(resized), 0.0, 1.0)
    return full


@lru_cache(maxsize=1)
def _jet() -> np.ndarray:
    """matplotlib's 'jet' as a 256 × 3 float32 table: the colours `colormaps["jet"](x)` gives."""
    return colormaps["jet"](np.arange(256))[:, :3].astype(np.float32)


def overlay_rgb(pixels: np.ndarray, heatmap: np.ndarray, box: tuple[int, int, int, int], alpha: float = 0.45,
                gray: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8: the grayscale film blended with the 'jet' colormap where the map is strong.

    Outside the crop box the map is zero, so the film is copied as it is; inside, the colour comes
    from the 256-entry table exactly as matplotlib indexes it (x · 256, 1.0 → 255), in float32.
    `gray` may pass `to_uint8(pixels)` when the caller has it already.
    """
    top, bottom, left, right = box
    out = np.repeat((to_uint8(pixels) if gray is None else gray)[..., np.newaxis], 3, axis=2)
    if bottom <= top or right <= left:
        return out
    region = Image.fromarray(heatmap.astype(np.float32), mode="F").resize((right - left, bottom - top), Image.BILINEAR)
    strength = np.clip(np.asarray(region, dtype=np.float32), 0.0, 1.0)
    colours = _jet()[np.minimum((strength * np.float32(256)).astype(np.intp), 255)]
    weight = (np.float32(alpha) * np.sqrt(strength))[..., np.newaxis]  # weak activations stay mostly transparent
    base = pixels[top:bottom, left:right, np.newaxis].astype(np.float32, copy=False)
    out[top:bottom, left:right] = to_uint8(base * (np.float32(1.0) - weight) + colours * weight)
    return out


# The overlay is for looking at in a browser: a 2-4k px detector film is drawn at this size at most
# (the heatmap itself is 8 × 8; the film stays stored at full size). 4-5× less work on such films.
OVERLAY_MAX_SIDE = 1024


def stored_pngs(pixels: np.ndarray, heatmap: np.ndarray, box: tuple[int, int, int, int],
                thumbnail_size: int) -> dict[str, bytes]:
    """{"image", "overlay", "thumbnail"}: the PNG files kept for one prediction."""
    gray = to_uint8(pixels)
    return {
        "image": png_bytes(gray),
        "overlay": png_bytes(display_overlay(pixels, heatmap, box, gray)),
        "thumbnail": png_bytes(thumbnail(gray, thumbnail_size)),
    }


def display_overlay(pixels: np.ndarray, heatmap: np.ndarray, box: tuple[int, int, int, int],
                    gray: np.ndarray | None = None, max_side: int = OVERLAY_MAX_SIDE) -> np.ndarray:
    """`overlay_rgb`, on the film scaled down to `max_side` pixels on its long side when it is larger."""
    height, width = pixels.shape
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return overlay_rgb(pixels, heatmap, box, gray=gray)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = Image.fromarray(pixels.astype(np.float32, copy=False), mode="F").resize(size, Image.BILINEAR,
                                                                                  reducing_gap=2.0)
    top, bottom, left, right = (round(v * scale) for v in box)
    return overlay_rgb(np.clip(np.asarray(small), 0.0, 1.0), heatmap, (top, bottom, left, right))


def thumbnail(gray: np.ndarray, size: int) -> np.ndarray:
    image = Image.fromarray(gray)
    image.thumbnail((size, size), Image.LANCZOS)
    return np.asarray(image)


def png_bytes(array: np.ndarray) -> bytes:
    """Lossless PNG of a uint8 grayscale (h × w) or RGB (h × w × 3) array.

    Written here rather than by Pillow: one PNG filter for every row ("up" for grayscale, "sub" for
    the colour overlay) and zlib level 1 encode a radiograph 3× faster than Pillow's per-row adaptive
    filters at level 3, for files 3-13 % larger (bench/README.md). Other arrays go through Pillow.
    """
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)) \
            or 0 in array.shape:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG", compress_level=3)
        return buffer.getvalue()
    height, width = array.shape[:2]
    channels = 1 if array.ndim == 2 else 3
    rows = np.ascontiguousarray(array).reshape(height, width * channels)
    scanlines = np.empty((height, width * channels + 1), dtype=np.uint8)
    if channels == 1:  # "up": each byte minus the one above (uint8 arithmetic wraps, as PNG wants)
        scanlines[:, 0] = 2
        scanlines[0, 1:] = rows[0]
        np.subtract(rows[1:], rows[:-1], out=scanlines[1:, 1:])
    else:  # "sub": each byte minus the same channel of the pixel to its left
        scanlines[:, 0] = 1
        scanlines[:, 1 : 1 + channels] = rows[:, :channels]
        np.subtract(rows[:, channels:], rows[:, :-channels], out=scanlines[:, 1 + channels :])
    header = struct.pack(">IIBBBBB", width, height, 8, 0 if channels == 1 else 2, 0, 0, 0)
    return b"".join((b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", header),
                     _chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 1)), _chunk(b"IEND", b"")))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
