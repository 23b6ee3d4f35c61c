"""The deployed decision: temperature calibration and the indeterminate outcome."""

from __future__ import annotations

import numpy as np
import pytest

from cxr.calibration import apply_temperature, fit_temperature
from cxr.decision import INDETERMINATE, Rule

CLASSES = ("covid", "normal")


def probs(p_covid: list[float]) -> np.ndarray:
    p = np.asarray(p_covid, dtype=np.float64)
    return np.column_stack([p, 1 - p])


def test_temperature_one_changes_nothing_and_others_keep_the_order():
    p = probs([0.05, 0.3, 0.5, 0.8, 0.99])
    np.testing.assert_allclose(apply_temperature(p, 1.0), p, atol=1e-12)
    for t in (0.5, 2.0):
        scaled = apply_temperature(p, t)
        np.testing.assert_allclose(scaled.sum(axis=1), 1.0)
        assert (np.diff(scaled[:, 0]) > 0).all(), "the ranking (and so the AUC) must not change"
        assert (scaled.argmax(1) == p.argmax(1)).all()


def test_fitted_temperature_recovers_overconfidence():
    rng = np.random.default_rng(0)
    true_p = rng.uniform(0.05, 0.95, 20000)
    y = (rng.random(true_p.size) > true_p).astype(int)  # class 0 (covid) with probability true_p
    overconfident = apply_temperature(probs(true_p.tolist()), 0.5)  # as if the true T were 2
    assert fit_temperature(overconfident, y) == pytest.approx(2.0, rel=0.05)


def test_indeterminate_never_takes_a_covid_call_away():
    rule = Rule(CLASSES, threshold=0.4, indeterminate_below=0.2, unusual_score=0.5)
    outcomes = rule.outcomes(probs([0.9, 0.4, 0.39, 0.2, 0.19, 0.05]), np.array([3.0, 3.0, 0.1, 0.1, 0.1, 0.1]))
    assert outcomes == ["covid", "covid", INDETERMINATE, INDETERMINATE, "normal", "normal"]


def test_an_unusual_film_is_not_called_normal():
    rule = Rule(CLASSES, threshold=0.4, indeterminate_below=0.2, unusual_score=0.5)
    assert rule.outcomes(probs([0.05, 0.05]), np.array([0.49, 0.51])) == ["normal", INDETERMINATE]
    assert rule.outcomes(probs([0.05])) == ["normal"]  # without a score only the band applies


def test_a_card_without_the_band_decides_as_before():
    rule = Rule.from_card({"classes": list(CLASSES), "threshold": {"value": 0.3}, "ood": {"threshold": 9.0}})
    assert rule.outcomes(probs([0.31, 0.29]), np.array([0.9, 0.9])) == ["covid", "normal"]
    argmax = Rule.from_card({"classes": ["a", "b", "c"], "threshold": {"value": None}})
    assert argmax.outcomes(np.array([[0.2, 0.5, 0.3]])) == ["b"]
