"""The out-of-distribution gate: is this upload a frontal chest X-ray the model may judge?

Two kinds of evidence, both cheap:
  * image statistics that no radiograph fails: it is grayscale, uses a broad intensity range, has no
    large area of one exact shade (documents, screenshots, drawings, padding), is smooth at the
    model's input scale (text, photos of textured things and noise are not) and has the coarse layout
    of a frontal chest film (dark lungs either side of a bright spine and heart, bright abdomen below);
  * the Mahalanobis distance of the CNN's 64-d features to the training X-rays (`cxr.ood`), which the
    forward pass computes anyway, with its threshold fitted at training time.
The limits of the image statistics were set on the shared chest X-rays outside the test split, where
each refuses at most 2 in 1000 (`python -m bench.ood_gate` measures all of it again).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxr.bundle import ModelOutput
from cxr.errors import NotAChestXray
from cxr.imaging import DecodedImage
from cxr.preprocess import Prepared, preprocess

MAX_COLOURFULNESS = 12.0  # Hasler-Süsstrunk; grayscale films score ~0, photos and slides 20-100
MIN_INTENSITY_SPREAD = 0.15  # 5th-95th percentile range of [0, 1] pixels; blank or near-blank images fall below
MAX_FLAT_FRACTION = 0.30  # share of the cropped image at its single most common of 256 grey levels
MAX_EDGE_STRENGTH = 0.09  # mean absolute neighbour difference of the equalised 128-px image
MIN_CHEST_LAYOUT = 0.10  # correlation of the equalised image's 8×8 block means with MEAN_CHEST
STATISTICS_SIZE = 128  # image statistics are taken at a fixed size, whatever the model's input size
# The mean of those 8×8 blocks over the shared data's training split (`python -m bench.ood_gate --mean-chest`).
MEAN_CHEST = np.array(
    [
        [0.27, 0.29, 0.31, 0.45, 0.46, 0.31, 0.30, 0.28],
        [0.48, 0.42, 0.25, 0.40, 0.44, 0.24, 0.39, 0.48],
        [0.54, 0.37, 0.17, 0.42, 0.51, 0.17, 0.34, 0.53],
        [0.52, 0.33, 0.20, 0.53, 0.63, 0.26, 0.32, 0.51],
        [0.48, 0.34, 0.30, 0.64, 0.75, 0.44, 0.34, 0.48],
        [0.46, 0.43, 0.47, 0.75, 0.82, 0.61, 0.44, 0.45],
        [0.46, 0.64, 0.74, 0.87, 0.88, 0.75, 0.59, 0.43],
        [0.49, 0.79, 0.90, 0.94, 0.94, 0.87, 0.74, 0.47],
    ]
)


class Refused(NotAChestXray):
    """The gate did not accept the image (HTTP 422); `reasons` has one sentence per failed check."""

    def __init__(self, reasons: tuple[str, ...]) -> None:
        super().__init__("The image was not analysed. " + " ".join(reasons))
        self.reasons = reasons


@dataclass(frozen=True)
class GateResult:
    accepted: bool
    score: float  # feature distance / its threshold: ≤ 1 looks like the training X-rays
    reasons: tuple[str, ...]  # for the person, one per failed check
    failed: tuple[str, ...] = ()  # the failed checks' names, for logs and the benchmark


def assess(image: DecodedImage, prediction: ModelOutput) -> GateResult:
    score = prediction.ood_score
    # The model's input is the image the statistics are taken on when it has their size: not prepared twice.
    prepared = Prepared(prediction.tensor, prediction.box) if prediction.tensor is not None else None
    failures = dict(_failures(image, score, prepared))
    return GateResult(not failures, score, tuple(failures.values()), tuple(failures))


def _failures(image: DecodedImage, score: float, prepared: Prepared | None = None):
    """(check name, message) for every check the image fails."""
    if image.colourfulness > MAX_COLOURFULNESS:
        yield "colour", "The image is in colour; a chest X-ray is grayscale."
    low, high = percentiles(image.gray, (5, 95))
    if high - low < MIN_INTENSITY_SPREAD:
        yield "uniform", "The image is almost uniform; it does not look like a radiograph."
    flat, edges, layout = image_statistics(image, prepared)
    if flat > MAX_FLAT_FRACTION:
        yield (
            "flat-areas",
            (
                f"{flat:.0%} of the image is one exact shade, as in documents, screenshots and drawings; "
                "a radiograph has no such areas."
            ),
        )
    if edges > MAX_EDGE_STRENGTH:
        yield (
            "edges",
            ("The image is full of sharp edges or fine texture (text, a photograph or noise); a radiograph is smooth."),
        )
    if layout < MIN_CHEST_LAYOUT:
        yield (
            "layout",
            (
                "The image does not have the layout of a frontal chest X-ray (dark lungs either side of the spine "
                "and heart); other pictures, other body parts and lateral or upside-down views are refused."
            ),
        )
    if score > 1.0:
        yield (
            "features",
            (
                f"The image does not resemble the chest X-rays the model was trained on "
                f"(out-of-distribution score {score:.2f}, limit 1.00)."
            ),
        )


def percentiles(gray: np.ndarray, qs: tuple[float, ...]) -> np.ndarray:
    """`np.percentile(gray, qs) / 255` read off the 256-level histogram (the same interpolation between
    order statistics), four times faster than sorting the pixels. Of a 16-bit film this is the
    percentile of its 8-bit rendering, at most 0.5/255 from that of the full-depth pixels."""
    cumulative = np.cumsum(np.bincount(gray.ravel(), minlength=256))
    positions = (gray.size - 1) * np.asarray(qs, dtype=np.float64) / 100.0
    below = np.floor(positions)
    low = np.searchsorted(cumulative, below, side="right")
    high = np.searchsorted(cumulative, np.ceil(positions), side="right")
    return (low + (high - low) * (positions - below)) / 255.0


def image_statistics(image: DecodedImage, prepared: Prepared | None = None) -> tuple[float, float, float]:
    """(flat fraction, edge strength, chest layout), all on what the model looks at: the cropped, equalised image.

    `prepared` may pass `preprocess(image.pixels, size)` when it was made already (it is used if its size
    is STATISTICS_SIZE)."""
    if prepared is None or prepared.tensor.shape[:2] != (STATISTICS_SIZE, STATISTICS_SIZE):
        prepared = preprocess(image.pixels, STATISTICS_SIZE)
    top, bottom, left, right = prepared.box
    levels = image.gray[top:bottom, left:right]
    flat = float(np.bincount(levels.ravel(), minlength=256).max() / levels.size)
    equalised = prepared.tensor[..., 0]
    edges = float((np.abs(np.diff(equalised, axis=0)).mean() + np.abs(np.diff(equalised, axis=1)).mean()) / 2)
    return flat, edges, _correlation(coarse(equalised), MEAN_CHEST)


def coarse(equalised: np.ndarray) -> np.ndarray:
    """The 8×8 block means of the equalised STATISTICS_SIZE image."""
    n = MEAN_CHEST.shape[0]
    return equalised.reshape(n, equalised.shape[0] // n, n, equalised.shape[1] // n).mean(axis=(1, 3))


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / norm) if norm > 0 else 0.0
