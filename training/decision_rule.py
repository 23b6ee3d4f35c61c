"""The operating point of a trained model: the temperature of the ensemble's probabilities, the covid
threshold, the indeterminate band, the OOD distance and the score above which a film is unusual, fitted
on the validation split, or taken from leave-source-out cross-validation (`--operating-point`)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import numpy as np

from cxr.calibration import apply_temperature, fit_temperature
from cxr.decision import POSITIVE_CLASS, Rule
from cxr.ood import FeatureDistance
from training.metrics import choose_threshold


@dataclass(frozen=True)
class DecisionRule:
    temperature: float
    threshold: float | None  # p(covid) from which a film is called covid; None: argmax (no covid class)
    indeterminate_below: float | None  # below the threshold, indeterminate from this p(covid)
    unusual: float  # OOD score above which a film not called covid is indeterminate
    ood: FeatureDistance
    rule: Rule
    crossval: dict | None  # the cross-validation's operating point it came from, if any


def fit_decision_rule(
    args: argparse.Namespace,
    classes: list[str],
    ensemble,
    features: dict[str, np.ndarray],
    class_of: dict[str, np.ndarray],
) -> DecisionRule:
    """`features` and `class_of` (class indices) per split; validation fits everything that
    `--operating-point` does not give (the OOD distance is always the model's own)."""
    ood = FeatureDistance.fit(features["train"], features["val"], args.ood_quantile)
    if args.operating_point is not None:
        crossval = json.loads(args.operating_point.read_text())
        temperature, threshold = crossval["temperature"], crossval["threshold"]
        lower, unusual = crossval["indeterminate_below"], crossval["unusual_score"]
    else:
        crossval = None
        raw = ensemble.predict_proba(features["val"])
        temperature = fit_temperature(raw, class_of["val"])
        threshold = lower = None
        if POSITIVE_CLASS in classes:
            positive = classes.index(POSITIVE_CLASS)
            p_positive = apply_temperature(raw, temperature)[:, positive]
            threshold = choose_threshold(class_of["val"], p_positive, positive, args.min_sensitivity)
            lower = min(
                threshold, choose_threshold(class_of["val"], p_positive, positive, args.indeterminate_sensitivity)
            )
        unusual = float(np.quantile(ood.distance(features["val"]), args.unusual_quantile) / ood.threshold)
    rule = Rule(tuple(classes), threshold, lower, unusual)
    return DecisionRule(temperature, threshold, lower, unusual, ood, rule, crossval)


def describe_threshold(args: argparse.Namespace, point: DecisionRule) -> dict:
    """The card's description of the threshold and the indeterminate band."""
    threshold, lower, crossval = point.threshold, point.indeterminate_below, point.crossval
    if crossval is not None:
        return {
            "value": threshold,
            "class": POSITIVE_CLASS,
            "rule": crossval["rule"],
            "fitted_on": "pooled out-of-source predictions of leave-source-out cross-validation",
            "indeterminate_below": lower,
            "indeterminate_rule": crossval["rule"],
        }
    return {
        "value": threshold,
        "class": POSITIVE_CLASS if threshold is not None else None,
        "rule": f"highest validation specificity with sensitivity ≥ {args.min_sensitivity}; "
        "ties to the value nearest 0.5"
        if threshold is not None
        else "argmax",
        "fitted_on": "the internal validation split",
        "indeterminate_below": lower,
        "indeterminate_rule": "below the threshold, p(covid) from which 'covid or indeterminate' "
        f"reaches validation sensitivity ≥ {args.indeterminate_sensitivity}",
    }
