"""The decision rule that turns class probabilities into one predicted class and a clinical
outcome, shared by evaluation and serving so that the reported metrics are those of the deployed
behaviour."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

POSITIVE_CLASS = "covid"
INDETERMINATE = "indeterminate"
# Why a film is indeterminate (either or both): its p(covid) is near the threshold, or it is unlike the
# films the model was trained on.
NEAR_THRESHOLD = "near_threshold"
UNLIKE_TRAINING = "unlike_training"


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


@dataclass(frozen=True)
class Rule:
    """The deployed decision: the covid threshold and when a film is *indeterminate*.

    A film is "covid" when p(covid) ≥ `threshold` (the indeterminate outcome never takes a COVID call
    away, so it cannot lower sensitivity). Below that it is "indeterminate" instead of the other class
    when p(covid) ≥ `indeterminate_below` (too close to the threshold to call it normal) or its
    out-of-distribution score exceeds `unusual_score` (unlike the training films, so a "normal" from
    the model means little). Indeterminate counts as "no COVID call" in every metric.
    """

    classes: tuple[str, ...]
    threshold: float | None
    indeterminate_below: float | None = None
    unusual_score: float | None = None

    @classmethod
    def from_card(cls, card: dict) -> Rule:
        threshold = card.get("threshold") or {}
        return cls(
            tuple(card["classes"]),
            threshold.get("value"),
            threshold.get("indeterminate_below"),
            (card.get("ood") or {}).get("indeterminate_above_score"),
        )

    def outcomes(self, probabilities: np.ndarray, ood_scores: np.ndarray | None = None) -> list[str]:
        """ "covid", another class name, or "indeterminate" for each row of `probabilities`."""
        probabilities = np.atleast_2d(np.asarray(probabilities, dtype=np.float64))
        chosen = [self.classes[i] for i in decide(probabilities, self.classes, self.threshold)]
        near, unusual = self._flags(probabilities, ood_scores)
        unsure = near | unusual
        return [INDETERMINATE if label != POSITIVE_CLASS and flag else label for label, flag in zip(chosen, unsure)]

    def reasons(self, probabilities: np.ndarray, ood_score: float | None) -> tuple[str, ...]:
        """Why one film (one row of class probabilities) is indeterminate: `NEAR_THRESHOLD` and/or
        `UNLIKE_TRAINING`; empty when it is not (a COVID call is never indeterminate)."""
        probabilities = np.atleast_2d(np.asarray(probabilities, dtype=np.float64))
        if self.classes[decide(probabilities, self.classes, self.threshold)[0]] == POSITIVE_CLASS:
            return ()
        near, unusual = self._flags(probabilities, None if ood_score is None else np.array([ood_score]))
        return tuple(reason for reason, flag in ((NEAR_THRESHOLD, near[0]), (UNLIKE_TRAINING, unusual[0])) if flag)

    def _flags(self, probabilities: np.ndarray, ood_scores: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Per row: p(covid) in the band below the threshold; out-of-distribution score above the cut-off."""
        near = np.zeros(len(probabilities), dtype=bool)
        unusual = np.zeros(len(probabilities), dtype=bool)
        if self.threshold is None or POSITIVE_CLASS not in self.classes:
            return near, unusual
        if self.indeterminate_below is not None:
            near = probabilities[:, self.classes.index(POSITIVE_CLASS)] >= self.indeterminate_below
        if self.unusual_score is not None and ood_scores is not None:
            unusual = np.asarray(ood_scores, dtype=np.float64) > self.unusual_score
        return near, unusual
