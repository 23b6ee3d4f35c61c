"""Grad-CAM heatmap drawn over the original radiograph, as PNG bytes."""

from __future__ import annotations

import io

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


def overlay_rgb(pixels: np.ndarray, heatmap: np.ndarray, box: tuple[int, int, int, int], alpha: float = 0.45) -> np.ndarray:
    """RGB uint8: the grayscale film blended with the 'jet' colormap where the map is strong."""
    full = heatmap_full_size(heatmap, box, pixels.shape)
    colours = colormaps["jet"](full)[..., :3]
    weight = alpha * full[..., np.newaxis] ** 0.5  # weak activations stay mostly transparent
    base = np.repeat(pixels[..., np.newaxis], 3, axis=2)
    return to_uint8(base * (1.0 - weight) + colours * weight)


def png_bytes(array: np.ndarray) -> bytes:
    """PNG encoding of a uint8 grayscale or RGB array."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()
