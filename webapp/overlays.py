"""The Grad-CAM overlay of a stored prediction, as the result page, the API, the PDF report and the DICOM
secondary capture show it: rendered from the film and the small heatmap (`cxr.overlay.overlay_from_files`),
or, for a prediction stored before heatmaps were, its stored overlay file as it is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cxr.overlay import jpeg_bytes, overlay_from_files
from webapp.db import Prediction


def overlay_rgb_of(record: Prediction, folder: Path) -> np.ndarray:
    """The overlay of `record` (files under `folder`) as an RGB uint8 array."""
    if record.heatmap_path:
        return overlay_from_files(folder / record.image_path, folder / record.heatmap_path)
    with Image.open(folder / record.overlay_path) as stored:
        return np.asarray(stored.convert("RGB"))


def rendered_overlay_jpeg(record: Prediction, folder: Path) -> bytes:
    """The overlay of a prediction that has a heatmap, rendered and encoded as JPEG (`cxr.overlay.jpeg_bytes`)."""
    return jpeg_bytes(overlay_from_files(folder / record.image_path, folder / record.heatmap_path))
