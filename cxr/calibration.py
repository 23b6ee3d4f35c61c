"""Temperature scaling of the ensemble's probabilities, fitted on the validation split.

Soft voting averages members that are each over- or under-confident in their own way, so the
averaged probabilities are not calibrated. One temperature T, chosen to minimise the validation
negative log-likelihood, rescales them: p_k ∝ p_k^(1/T). It keeps the ranking of the images (the ROC
AUC does not change) and every image's most probable class.
"""

from __future__ import annotations

import numpy as np

EPSILON = 1e-6  # probabilities are clipped away from 0 before the logarithm


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Rows of `probabilities` (n × k) raised to 1/T and renormalised; T = 1 returns them unchanged."""
    logits = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), EPSILON, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def fit_temperature(probabilities: np.ndarray, y_true: np.ndarray) -> float:
    """The temperature in [0.05, 20] minimising the negative log-likelihood of `y_true`."""
    from scipy.optimize import minimize_scalar

    rows = np.arange(len(y_true))

    def nll(log_t: float) -> float:
        return float(-np.log(apply_temperature(probabilities, float(np.exp(log_t)))[rows, y_true]).mean())

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))
