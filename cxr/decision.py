"""The decision rule that turns class probabilities into one predicted class, shared by
evaluation and serving so that the reported metrics are those of the deployed behaviour."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

POSITIVE_CLASS = "covid"


def decide(probabilities: np.ndarray, classes: Sequence[str], threshold: float | None) -> np.ndarray:
    """Class indices for rows of `probabilities` (n × k).

    With a covid class and an operating threshold, an image is "covid" when p(covid) ≥ threshold;
    otherwise it takes the most probable of the remaining classes. Without either, argmax.
    """
    probabilities = np.atleast_2d(np.asarray(probabilities, dtype=np.float64))
    if threshold is None or POSITIVE_CLASS not in classes:
        return probabilities.argmax(axis=1)
    positive = list(classes).index(POSITIVE_CLASS)
    others = probabilities.copy()
    others[:, positive] = -np.inf
    return np.where(probabilities[:, positive] >= threshold, positive, others.argmax(axis=1))
