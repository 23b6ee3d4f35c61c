"""The Grad-CAM overlay of a stored prediction, as the result page, the API, the PDF report and the DICOM
secondary capture show it: rendered from the film and the small heatmap (`cxr.overlay.overlay_from_files`),
or, for a prediction stored before heatmaps were, its stored overlay file as it is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cxr.overlay import overlay_from_files
from webapp.db import Prediction
from webapp.model_service import model_service


def overlay_rgb_of(record: Prediction, folder: Path) -> np.ndarray:
    """The overlay of `record` (files under `folder`) as an RGB uint8 array. Rendering decodes the whole
    film, so it takes one of the process's analysis slots as an upload does (the film may be 40 megapixels)."""
    if record.heatmap_path:
        with model_service.analysis_slot():
            return overlay_from_files(folder / record.image_path, folder / record.heatmap_path)
    with Image.open(folder / record.overlay_path) as stored:
        return np.asarray(stored.convert("RGB"))
