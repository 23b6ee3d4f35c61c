"""The out-of-distribution gate: is this upload a frontal chest X-ray the model may judge?

Two kinds of evidence, both cheap:
  * image statistics that no radiograph fails: it is grayscale, uses a broad intensity range, has no
    large area of one exact shade (documents, screenshots, drawings, padding) and is smooth at the
    model's input scale (text, photos of textured things and noise are not);
  * the Mahalanobis distance of the CNN's 64-d features to the training X-rays (`cxr.ood`), which the
    forward pass computes anyway, with its threshold fitted at training time.
The limits of the image statistics were set on the shared chest X-rays outside the test split, where
each refuses at most 1 in 1000 (`python -m bench.ood_gate` measures all of it again).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxr.bundle import Prediction
from cxr.imaging import DecodedImage
from cxr.preprocess import Prepared, preprocess

MAX_COLOURFULNESS = 12.0  # Hasler-Süsstrunk; grayscale films score ~0, photos and slides 20-100
MIN_INTENSITY_SPREAD = 0.15  # 5th-95th percentile range of [0, 1] pixels; blank or near-blank images fall below
MAX_FLAT_FRACTION = 0.30  # share of the cropped image at its single most common of 256 grey levels
MAX_EDGE_STRENGTH = 0.09  # mean absolute neighbour difference of the equalised 128-px image
STATISTICS_SIZE = 128  # image statistics are taken at a fixed size, whatever the model's input size


@dataclass(frozen=True)
class GateResult:
    accepted: bool
    score: float  # feature distance / its threshold: ≤ 1 looks like the training X-rays
    reasons: tuple[str, ...]  # for the person, one per failed check
    failed: tuple[str, ...] = ()  # the failed checks' names, for logs and the benchmark


def assess(image: DecodedImage, prediction: Prediction) -> GateResult:
    score = float(prediction.ood_distance / prediction.ood_threshold)
    # The model's input is the image the statistics are taken on when it has their size: not prepared twice.
    prepared = Prepared(prediction.tensor, prediction.box) if prediction.tensor is not None else None
    failures = dict(_failures(image, score, prepared))
    return GateResult(not failures, score, tuple(failures.values()), tuple(failures))


def _failures(image: DecodedImage, score: float, prepared: Prepared | None = None):
    """(check name, message) for every check the image fails."""
    if image.colourfulness > MAX_COLOURFULNESS:
        yield "colour", "The image is in colour; a chest X-ray is grayscale."
    low, high = np.percentile(image.pixels, [5, 95])
    if high - low < MIN_INTENSITY_SPREAD:
        yield "uniform", "The image is almost uniform; it does not look like a radiograph."
    flat, edges = image_statistics(image.pixels, prepared)
    if flat > MAX_FLAT_FRACTION:
        yield "flat-areas", (
            f"{flat:.0%} of the image is one exact shade, as in documents, screenshots and drawings; "
            "a radiograph has no such areas."
        )
    if edges > MAX_EDGE_STRENGTH:
        yield "edges", (
            "The image is full of sharp edges or fine texture (text, a photograph or noise); a radiograph is smooth."
        )
    if score > 1.0:
        yield "features", (
            f"The image does not resemble the chest X-rays the model was trained on "
            f"(out-of-distribution score {score:.2f}, limit 1.00)."
        )


def image_statistics(pixels: np.ndarray, prepared: Prepared | None = None) -> tuple[float, float]:
    """(flat fraction, edge strength), both on what the model looks at: the cropped, equalised image.

    `prepared` may pass `preprocess(pixels, size)` when it was made already (it is used if its size is
    STATISTICS_SIZE)."""
    if prepared is None or prepared.tensor.shape[:2] != (STATISTICS_SIZE, STATISTICS_SIZE):
        prepared = preprocess(pixels, STATISTICS_SIZE)
    top, bottom, left, right = prepared.box
    levels = np.rint(pixels[top:bottom, left:right] * 255).astype(np.int64)
    flat = float(np.bincount(levels.ravel(), minlength=256).max() / levels.size)
    equalised = prepared.tensor[..., 0]
    edges = float((np.abs(np.diff(equalised, axis=0)).mean() + np.abs(np.diff(equalised, axis=1)).mean()) / 2)
    return flat, edges
