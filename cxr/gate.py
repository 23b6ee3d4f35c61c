"""The out-of-distribution gate: is this upload a frontal chest X-ray the model may judge?

Two kinds of evidence, both cheap:
  * image statistics that no radiograph fails: it is grayscale, uses a broad intensity range, has no
    large area of one exact shade (documents, screenshots, drawings, padding), is smooth at the
    model's input scale (text, photos of textured things and noise are not) and has the coarse layout
    of a frontal chest film (dark lungs either side of a bright spine and heart, bright abdomen below);
  * the Mahalanobis distance of the CNN's 64-d features to the training X-rays (`cxr.ood`), which the
    forward pass computes anyway, with its threshold fitted at training time.
The mean chest layout and the limits of three image statistics (flat areas, edges, layout) are fitted
on the model's training films and ship in its bundle (`cxr.gate_statistics`, GATE_FILE): each refuses
REFUSED_SHARE of those films. Colour and intensity spread keep fixed limits: the training films are
grayscale re-encodings with their range stretched, so they say nothing about either
(`python -m bench.ood_gate` measures all of it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from cxr.errors import NotAChestXray
from cxr.gate_statistics import GateLimits, measure
from cxr.imaging import DecodedImage
from cxr.preprocess import Prepared

if TYPE_CHECKING:
    from cxr.bundle import ModelOutput

MAX_COLOURFULNESS = 12.0  # Hasler-Süsstrunk; grayscale films score ~0, photos and slides 20-100
MIN_INTENSITY_SPREAD = 0.15  # 5th-95th percentile range of [0, 1] pixels; blank or near-blank images fall below


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


def assess(image: DecodedImage, prediction: ModelOutput, limits: GateLimits) -> GateResult:
    """The gate's verdict on `image`, with the limits fitted for the model that made `prediction`."""
    score = prediction.ood_score
    # The model's input is the image the statistics are taken on when it has their size: not prepared twice.
    prepared = Prepared(prediction.tensor, prediction.box) if prediction.tensor is not None else None
    failures = dict(_failures(image, score, limits, prepared))
    return GateResult(not failures, score, tuple(failures.values()), tuple(failures))


def _failures(image: DecodedImage, score: float, limits: GateLimits, prepared: Prepared | None = None):
    """(check name, message) for every check the image fails."""
    if image.colourfulness > MAX_COLOURFULNESS:
        yield "colour", "The image is in colour; a chest X-ray is grayscale."
    statistics = measure(image, prepared)
    low, high = percentiles(statistics.histogram, (5, 95))
    if high - low < MIN_INTENSITY_SPREAD:
        yield "uniform", "The image is almost uniform; it does not look like a radiograph."
    flat = statistics.flat_fraction
    if flat > limits.max_flat_fraction:
        yield (
            "flat-areas",
            (
                f"{flat:.0%} of the image is one exact shade, as in documents, screenshots and drawings; "
                "a radiograph has no such areas."
            ),
        )
    if statistics.edge_strength > limits.max_edge_strength:
        yield (
            "edges",
            ("The image is full of sharp edges or fine texture (text, a photograph or noise); a radiograph is smooth."),
        )
    if limits.layout(statistics) < limits.min_chest_layout:
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


def percentiles(counts: np.ndarray, qs: tuple[float, ...]) -> np.ndarray:
    """`np.percentile(gray, qs) / 255` read off the 8-bit film's 256-level histogram `counts` (the same
    interpolation between order statistics), much faster than sorting the pixels. Of a 16-bit film this
    is the percentile of its 8-bit rendering, at most 0.5/255 from that of the full-depth pixels."""
    cumulative = np.cumsum(counts)
    positions = (int(cumulative[-1]) - 1) * np.asarray(qs, dtype=np.float64) / 100.0
    below = np.floor(positions)
    low = np.searchsorted(cumulative, below, side="right")
    high = np.searchsorted(cumulative, np.ceil(positions), side="right")
    return (low + (high - low) * (positions - below)) / 255.0
