"""The lung-field crop: a small CNN finds the box around both lungs, and the classifier sees only that.

Without it the classifier sees the whole film: burned-in text, side markers, shoulders, the abdomen,
tubes at the edge. Those differ between hospitals far more than the lungs do, and a network readily
learns them as a shortcut to the collection and thereby the label. The localiser (`training.lungs`
trains it from the lung masks and boxes in the shared data) looks at the film at `LOCALISER_SIZE`
pixels after the usual border trim and margin (`cxr.preprocess.crop_box`) and gives the lung box as
fractions of that frame; the box, widened by a margin, is then cut from the full-resolution film and
preprocessed as any film is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cxr.preprocess import Prepared, preprocess

LOCALISER_SIZE = 64
LUNG_FILE = "lungs.keras"
# The box is widened by this fraction of its size on every side (the lung edges and costophrenic
# angles stay in), and never made smaller than MIN_FRACTION of the frame on either axis (a localiser
# that fails on an odd film falls back towards the whole frame instead of a sliver).
MARGIN = 0.05
MIN_FRACTION = 0.4


def normalise_fractions(raw: np.ndarray) -> np.ndarray:
    """(top, bottom, left, right) fractions, ordered, widened by `MARGIN`, at least `MIN_FRACTION`
    wide and high, within [0, 1]; `raw` is n × 4."""
    raw = np.clip(np.atleast_2d(np.asarray(raw, dtype=np.float64)), 0.0, 1.0)
    out = np.empty_like(raw)
    for axis in (0, 2):
        low, high = np.minimum(raw[:, axis], raw[:, axis + 1]), np.maximum(raw[:, axis], raw[:, axis + 1])
        extent = np.minimum(np.maximum((high - low) * (1 + 2 * MARGIN), MIN_FRACTION), 1.0)
        centre = (low + high) / 2
        low, high = centre - extent / 2, centre + extent / 2
        low, high = low - np.maximum(high - 1.0, 0.0), np.minimum(high, 1.0)  # moved inside, same extent
        low, high = np.maximum(low, 0.0), high + np.maximum(-low, 0.0)
        out[:, axis], out[:, axis + 1] = low, np.minimum(high, 1.0)
    return out


def crop_parameters() -> dict[str, float | int | str]:
    """Stored in the model card; serving refuses a model whose crop was made with other values."""
    return {"file": LUNG_FILE, "localiser_input": LOCALISER_SIZE, "margin": MARGIN, "min_fraction": MIN_FRACTION}


def lung_box(frame: tuple[int, int, int, int], fractions: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) in pixels of the film for lung-box `fractions` of `frame`."""
    top, bottom, left, right = frame
    f_top, f_bottom, f_left, f_right = (float(v) for v in fractions)
    height, width = bottom - top, right - left
    y0, y1 = top + round(f_top * height), top + round(f_bottom * height)
    x0, x1 = left + round(f_left * width), left + round(f_right * width)
    # At least two pixels each way, so that resizing always has something to work on.
    return y0, max(y1, y0 + 2), x0, max(x1, x0 + 2)


class LungLocaliser:
    """The trained localiser: `fractions(tensors)` for frames preprocessed at `LOCALISER_SIZE`."""

    def __init__(self, path: Path) -> None:
        import keras
        import tensorflow as tf

        self.model = keras.saving.load_model(path, compile=False)
        signature = [tf.TensorSpec((None, LOCALISER_SIZE, LOCALISER_SIZE, 1), tf.float32)]
        self._forward = tf.function(lambda images: self.model(images, training=False), input_signature=signature)

    def fractions(self, tensors: np.ndarray) -> np.ndarray:
        """Lung boxes (n × 4: top, bottom, left, right as fractions of the frame), normalised."""
        raw = np.concatenate(
            [
                self._forward(np.asarray(tensors[i : i + 256], dtype=np.float32)).numpy()
                for i in range(0, len(tensors), 256)
            ]
        )
        return normalise_fractions(raw)


def prepare(pixels: np.ndarray, size: int, localiser: LungLocaliser | None) -> Prepared:
    """The classifier's input for one film: the lung box when a localiser is given, else the frame."""
    if localiser is None:
        return preprocess(pixels, size)
    overview = preprocess(pixels, LOCALISER_SIZE)
    return preprocess(pixels, size, lung_box(overview.box, localiser.fractions(overview.tensor[np.newaxis])[0]))
