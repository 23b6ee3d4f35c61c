"""Scores of every classifier (the CNN's softmax, each ensemble member, the soft-voting ensemble)
on one set of images, shared by training (for the model card) and `training.evaluate`.

Vocabulary, here and in all of training/: a film's *label* is what the data says (normal, covid,
viral_pneumonia, ...); its *class* is one of the model's classes, to which the label maps
(`class_indices`: labels in `negatives` are trained and scored as "normal"); the model's *decision* is
the deployed outcome, a class or "indeterminate" (`cxr.decision.Rule`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cxr.calibration import apply_temperature
from cxr.decision import POSITIVE_CLASS, Rule, decide
from cxr.ood import FeatureDistance
from training.data import Sample
from training.metrics import classification_metrics
from training.unseen import NORMAL, format_sources, per_source

MEMBER_TITLES = {
    "cnn": "CNN softmax",
    "decision_tree": "Decision tree",
    "svm": "SVM",
    "random_forest": "Random forest",
    "adaboost": "AdaBoost",
    "ensemble_argmax": "Ensemble (argmax)",
    "ensemble": "Ensemble (operating threshold)",
}


def classifier_probabilities(
    ensemble, features: np.ndarray, cnn_probabilities: np.ndarray, temperature: float = 1.0
) -> dict[str, np.ndarray]:
    """Probabilities (n × k) of each classifier; `ensemble` is the fitted scaler + voting pipeline, whose
    probabilities are calibrated with `temperature` as serving calibrates them."""
    scaled = ensemble[:-1].transform(features)
    voting = ensemble[-1]
    result = {"cnn": cnn_probabilities}
    for name, member in voting.named_estimators_.items():
        result[name] = member.predict_proba(scaled)
    result["ensemble"] = apply_temperature(ensemble.predict_proba(features), temperature)
    return result


def score_all(
    probabilities: dict[str, np.ndarray],
    y_true: np.ndarray,
    classes: Sequence[str],
    threshold: float | None,
    sources: Sequence[str],
) -> dict:
    """Metrics per classifier, plus the ensemble's metrics per source."""
    results = {}
    for name, probs in probabilities.items():
        if name == "ensemble":
            results["ensemble_argmax"] = classification_metrics(y_true, probs, probs.argmax(1), classes)
            results["ensemble"] = classification_metrics(y_true, probs, decide(probs, classes, threshold), classes)
        else:
            results[name] = classification_metrics(y_true, probs, probs.argmax(1), classes)
    ensemble = probabilities["ensemble"]
    decided = decide(ensemble, classes, threshold)
    sources = np.asarray(sources)
    results["ensemble_per_source"] = {
        source: classification_metrics(
            y_true[sources == source], ensemble[sources == source], decided[sources == source], classes
        )
        for source in sorted(set(sources.tolist()))
    }
    return results


def format_table(metrics: dict, classes: Sequence[str], title: str) -> str:
    """A plain-text table of accuracy, AUC, per-class recall, Brier and ECE per classifier."""
    header = f"{'classifier':<32}{'n':>6}{'acc':>8}{'AUC':>8}" + "".join(f"{'rec_' + c[:10]:>16}" for c in classes)
    header += f"{'Brier':>8}{'ECE':>8}"
    lines = [title, header, "-" * len(header)]

    def row(label: str, m: dict) -> str:
        auc = f"{m['roc_auc']:.4f}" if m["roc_auc"] is not None else "n/a"
        recalls = "".join(f"{m['per_class'][c]['recall']:>16.4f}" for c in classes)
        return f"{label:<32}{m['n']:>6}{m['accuracy']:>8.4f}{auc:>8}{recalls}{m['brier']:>8.4f}{m['ece']:>8.4f}"

    for name, title_ in MEMBER_TITLES.items():
        if name in metrics:
            lines.append(row(title_, metrics[name]))
    for source, m in metrics.get("ensemble_per_source", {}).items():
        lines.append(row(f"  ensemble on {source}", m))
    return "\n".join(lines)


def class_indices(samples: Sequence[Sample], classes: Sequence[str], negatives: Sequence[str]) -> np.ndarray:
    """The index in `classes` of each sample's class: its label, or "normal" for a label in `negatives`."""
    return np.array([list(classes).index(NORMAL if s.label in negatives else s.label) for s in samples], dtype=int)


@dataclass(frozen=True)
class SplitScores:
    probabilities: dict[str, np.ndarray]  # per classifier, n × k (`classifier_probabilities`)
    metrics: dict  # `score_all`
    decisions: list[str]  # the deployed outcome of each film
    outcomes: dict | None  # `training.unseen.per_source` at the deployed rule; None without a covid threshold


def score_split(
    ensemble,
    features: np.ndarray,
    cnn_probabilities: np.ndarray,
    samples: Sequence[Sample],
    classes: Sequence[str],
    negatives: Sequence[str],
    temperature: float,
    rule: Rule,
    ood: FeatureDistance,
    title: str,
) -> SplitScores:
    """Every figure of one set of films, as training puts them in the card and `training.evaluate`
    reports them; prints the tables under `title`."""
    probabilities = classifier_probabilities(ensemble, features, cnn_probabilities, temperature)
    sources = [s.source for s in samples]
    metrics = score_all(probabilities, class_indices(samples, classes, negatives), classes, rule.threshold, sources)
    print(format_table(metrics, classes, title), flush=True)
    decisions = rule.outcomes(probabilities["ensemble"], ood.distance(features) / ood.threshold)
    outcomes = None
    if POSITIVE_CLASS in classes and rule.threshold is not None:
        p_covid = probabilities["ensemble"][:, list(classes).index(POSITIVE_CLASS)]
        outcomes = per_source([s.label for s in samples], p_covid, decisions, sources)
        heading = "at the deployed rule (indeterminate counts as no COVID call), per source"
        print(format_sources(outcomes, f"\n{title}: {heading}"), flush=True)
    return SplitScores(probabilities, metrics, decisions, outcomes)
