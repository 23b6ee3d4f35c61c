"""The out-of-distribution gate: is this upload a frontal chest X-ray the model may judge?

It combines cheap image checks (a radiograph is grayscale and uses a broad intensity range) with
the Mahalanobis distance of the CNN's 64-d features to the training X-rays (`cxr.ood`), which the
forward pass computes anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxr.bundle import Prediction
from cxr.imaging import DecodedImage

MAX_COLOURFULNESS = 12.0  # Hasler-Süsstrunk; grayscale films score ~0, photos and slides 20-100
MIN_INTENSITY_SPREAD = 0.15  # 5th-95th percentile range of [0, 1] pixels; blank or near-blank images fall below


@dataclass(frozen=True)
class GateResult:
    accepted: bool
    score: float  # feature distance / its threshold: ≤ 1 looks like the training X-rays
    reasons: tuple[str, ...]


def assess(image: DecodedImage, prediction: Prediction) -> GateResult:
    reasons = []
    if image.colourfulness > MAX_COLOURFULNESS:
        reasons.append("The image is in colour; a chest X-ray is grayscale.")
    low, high = np.percentile(image.pixels, [5, 95])
    if high - low < MIN_INTENSITY_SPREAD:
        reasons.append("The image is almost uniform; it does not look like a radiograph.")
    score = prediction.ood_distance / prediction.ood_threshold
    if score > 1.0:
        reasons.append(
            f"The image does not resemble the chest X-rays the model was trained on "
            f"(out-of-distribution score {score:.2f}, limit 1.00)."
        )
    return GateResult(accepted=not reasons, score=float(score), reasons=tuple(reasons))
