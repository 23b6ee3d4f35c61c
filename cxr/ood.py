"""Out-of-distribution score: how far an image's 64-d CNN features lie from the training X-rays.

Fitted at training time (mean and a shrunk covariance of the training features, threshold at a
high quantile of held-out validation distances) and stored with the model as `ood.npz`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class FeatureDistance:
    mean: np.ndarray
    precision: np.ndarray
    threshold: float  # distances above this are out of distribution
    quantile: float  # the validation quantile the threshold was set at

    @classmethod
    def fit(cls, train_features: np.ndarray, val_features: np.ndarray, quantile: float) -> FeatureDistance:
        from sklearn.covariance import LedoitWolf

        estimator = LedoitWolf().fit(train_features)
        fitted = cls(estimator.location_, estimator.precision_, threshold=np.inf, quantile=quantile)
        threshold = float(np.quantile(fitted.distance(val_features), quantile))
        return cls(fitted.mean, fitted.precision, threshold=threshold, quantile=quantile)

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row of `features` (n × 64) to the training features."""
        centred = np.atleast_2d(features) - self.mean
        return np.sqrt(np.einsum("ij,jk,ik->i", centred, self.precision, centred).clip(min=0.0))

    def save(self, path: Path) -> None:
        np.savez(path, mean=self.mean, precision=self.precision, threshold=self.threshold, quantile=self.quantile)

    @classmethod
    def load(cls, path: Path) -> FeatureDistance:
        with np.load(path) as stored:
            return cls(stored["mean"], stored["precision"], float(stored["threshold"]), float(stored["quantile"]))
