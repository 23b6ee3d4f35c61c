"""Synthetic films built in memory, for the tests and the README's screenshots (tools/screenshots.py): no
patient's film and no shared data set image."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def synthetic_chest(seed: int = 0, size: int = 320) -> np.ndarray:
    """A chest-like 8-bit radiograph: dark lung fields and a bright spine in a bright body on a dark background."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.full((size, size), 0.05)
    body = ((x - 0.5) / 0.47) ** 2 + ((y - 0.6) / 0.55) ** 2 < 1
    image[body] = 0.7
    for centre in (0.3, 0.7):
        lung = ((x - centre) / 0.16) ** 2 + ((y - 0.5) / 0.32) ** 2 < 1
        image[lung] = 0.2 + 0.15 * (y[lung] - 0.2)
    image += 0.08 * (np.sin(y * 60 + 4 * np.abs(x - 0.5)) > 0.6) * body  # ribs
    image[(np.abs(x - 0.5) < 0.05) & (y > 0.05)] = 0.85  # spine
    image += rng.normal(0, 0.04, image.shape)
    gray = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8))
    return np.asarray(gray.filter(ImageFilter.GaussianBlur(8)))
