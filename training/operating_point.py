"""The operating point fitted on out-of-source predictions, and the figures it gives.

An internal validation split shares its collections with training, so a threshold chosen there does
not transfer: at a hospital the model never saw, its p(covid) for healthy films sits higher. The
operating point is therefore fitted on the pooled predictions that leave-source-out
cross-validation (`training.crossval`) makes for films of sources their model never trained on:

1. a temperature T on the ensemble's raw probabilities (minimum negative log-likelihood);
2. the covid threshold: the highest value at which every held-out source with at least
   `MIN_COVID_PER_SOURCE` COVID films, and the pool, keeps sensitivity ≥ `min_sensitivity`;
3. the indeterminate band below it: down to the p(covid) at which "covid or indeterminate" reaches
   `band_sensitivity`, but never so low that more than `max_band_share` of the normal films not
   called COVID become indeterminate (the band must not swallow the normals);
4. "unlike the training films": an out-of-distribution score above the `unusual_quantile` of the
   out-of-source films' scores also makes a film not called COVID indeterminate.
The rule maximises the share of normal films called normal outright under the sensitivity floor.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cxr.calibration import apply_temperature, fit_temperature
from cxr.decision import POSITIVE_CLASS, Rule
from training.unseen import NORMAL, outcome_metrics

PREDICTION_FIELDS = [
    "file",
    "label",
    "source",
    "fold",
    "seed",
    "model_version",
    "p_covid_raw",  # the ensemble's p(covid) before any temperature
    "ood_score",  # feature distance / the fold model's gate threshold
    "p_covid_own",  # calibrated by the fold model's own (internal-validation) temperature
    "own_outcome",  # the fold model's own rule, fitted on its internal validation split
]
CLASSES = (POSITIVE_CLASS, NORMAL)
MIN_COVID_PER_SOURCE = 20  # fewer COVID films give a sensitivity too noisy to hold the threshold to
METRICS = (
    "sensitivity",
    "specificity",
    "normal_called_normal",
    "other_findings_not_called_covid",
    "indeterminate_rate",
    "indeterminate_normals",
    "roc_auc",
    "ece",
)


def read_predictions(paths: Iterable[Path]) -> list[dict]:
    rows = []
    for path in paths:
        with Path(path).open(newline="") as handle:
            for row in csv.DictReader(handle):
                rows.append(
                    row
                    | {
                        "fold": int(row["fold"]),
                        "seed": int(row["seed"]),
                        "p_covid_raw": float(row["p_covid_raw"]),
                        "ood_score": float(row["ood_score"]),
                        "p_own": float(row["p_covid_own"]),
                    }
                )
    return rows


def _kth_largest(values: np.ndarray, fraction: float) -> float:
    """The largest t with at least `fraction` of `values` ≥ t."""
    ordered = np.sort(values)[::-1]
    return float(ordered[max(0, math.ceil(fraction * len(ordered)) - 1)])


def _binary(p_covid: np.ndarray) -> np.ndarray:
    return np.column_stack([p_covid, 1.0 - p_covid])


@dataclass(frozen=True)
class OperatingPoint:
    temperature: float
    threshold: float
    indeterminate_below: float
    unusual_score: float
    min_sensitivity: float
    band_sensitivity: float
    max_band_share: float
    unusual_quantile: float

    def calibrated(self, p_raw: np.ndarray) -> np.ndarray:
        return apply_temperature(_binary(np.asarray(p_raw, dtype=np.float64)), self.temperature)[:, 0]

    def rule(self) -> Rule:
        return Rule(CLASSES, self.threshold, self.indeterminate_below, self.unusual_score)

    def apply(self, rows: Sequence[dict]) -> list[dict]:
        """`rows` with "p" (calibrated p(covid)) and "outcome" at this operating point."""
        if not rows:
            return []
        p = self.calibrated(np.array([r["p_covid_raw"] for r in rows]))
        outcomes = self.rule().outcomes(_binary(p), np.array([r["ood_score"] for r in rows]))
        return [r | {"p": float(q), "outcome": o} for r, q, o in zip(rows, p, outcomes)]

    def as_dict(self) -> dict:
        return asdict(self) | {
            "rule": (
                f"covid when calibrated p(covid) ≥ {self.threshold:.4f} (the highest threshold keeping "
                f"out-of-source sensitivity ≥ {self.min_sensitivity} pooled and at every held-out source with "
                f"≥ {MIN_COVID_PER_SOURCE} COVID films); indeterminate below it from {self.indeterminate_below:.4f} "
                f"('covid or indeterminate' sensitivity up to {self.band_sensitivity}, at most "
                f"{self.max_band_share:.0%} of the normals not called COVID) or with an out-of-distribution score "
                f"above {self.unusual_score:.3f} (the {self.unusual_quantile} quantile of out-of-source films)"
            )
        }


def fit_operating_point(
    rows: Sequence[dict],
    min_sensitivity: float = 0.90,
    band_sensitivity: float = 0.97,
    max_band_share: float = 0.25,
    unusual_quantile: float = 0.99,
) -> OperatingPoint:
    labels = np.array([r["label"] for r in rows])
    sources = np.array([r["source"] for r in rows])
    p_raw = np.array([r["p_covid_raw"] for r in rows])
    is_covid, is_normal = labels == POSITIVE_CLASS, labels == NORMAL
    if not is_covid.any() or is_covid.all():
        raise ValueError("the operating point needs COVID and non-COVID out-of-source films")
    temperature = fit_temperature(_binary(p_raw), (~is_covid).astype(int))
    p = apply_temperature(_binary(p_raw), temperature)[:, 0]
    threshold = _kth_largest(p[is_covid], min_sensitivity)
    for source in np.unique(sources[is_covid]):
        covid_here = p[is_covid & (sources == source)]
        if covid_here.size >= MIN_COVID_PER_SOURCE:
            threshold = min(threshold, _kth_largest(covid_here, min_sensitivity))
    lower = _kth_largest(p[is_covid], band_sensitivity)
    normals_below = p[is_normal & (p < threshold)]
    if normals_below.size:
        lower = max(lower, float(np.quantile(normals_below, 1.0 - max_band_share)))
    unusual = float(np.quantile([r["ood_score"] for r in rows], unusual_quantile))
    return OperatingPoint(
        float(temperature),
        float(threshold),
        float(min(lower, threshold)),
        unusual,
        min_sensitivity,
        band_sensitivity,
        max_band_share,
        unusual_quantile,
    )


def cross_fitted(rows: Sequence[dict], **kwargs) -> list[dict]:
    """Every fold's rows judged by the operating point fitted on the other folds' rows (of the same
    seeds), so no film helps choose the rule it is scored by. Folds whose others lack either class are
    left out."""
    judged = []
    for fold in sorted({r["fold"] for r in rows}):
        others = [r for r in rows if r["fold"] != fold]
        labels = {r["label"] == POSITIVE_CLASS for r in others}
        if labels != {True, False}:
            continue
        judged.extend(fit_operating_point(others, **kwargs).apply([r for r in rows if r["fold"] == fold]))
    return judged


def group_metrics(rows: Sequence[dict]) -> dict:
    return outcome_metrics([r["label"] for r in rows], np.array([r["p"] for r in rows]), [r["outcome"] for r in rows])


def bootstrap_intervals(rows: Sequence[dict], resamples: int, seed: int = 0) -> dict[str, list[float] | None]:
    """95 % percentile intervals of `METRICS`, resampling films (all of a film's predictions together,
    so that two seeds' predictions of one film do not count as two films)."""
    by_film: dict[str, list[dict]] = {}
    for row in rows:
        by_film.setdefault(row["file"], []).append(row)
    films = list(by_film.values())
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {name: [] for name in METRICS}
    for _ in range(resamples):
        sample = [row for i in rng.integers(0, len(films), len(films)) for row in films[i]]
        metrics = group_metrics(sample)
        for name in METRICS:
            if metrics[name] is not None:
                draws[name].append(metrics[name])
    return {
        name: [float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))] if len(v) >= resamples // 2 else None
        for name, v in draws.items()
    }


def summarise(rows: Sequence[dict], resamples: int, sources: bool = True) -> dict:
    """Metrics and intervals per source (when `sources`) and pooled ("all")."""
    groups = {"all": list(rows)}
    if sources:
        for source in sorted({r["source"] for r in rows}):
            groups[source] = [r for r in rows if r["source"] == source]
    return {
        name: group_metrics(members) | {"interval": bootstrap_intervals(members, resamples)}
        for name, members in groups.items()
        if members
    }


def _cell(metrics: dict, name: str) -> str:
    value = metrics.get(name)
    if value is None:
        return "–"
    interval = metrics["interval"].get(name)
    return f"{value:.3f} ({interval[0]:.2f}–{interval[1]:.2f})" if interval else f"{value:.3f}"


def table_rows(summary: dict) -> list[str]:
    lines = [
        "| source | films (covid / normal / other) | sensitivity | specificity | normal called normal "
        "| other not called COVID | indeterminate | normals indeterminate | ROC AUC | ECE |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for source, m in summary.items():
        lines.append(
            f"| {source} | {m['n_covid']} / {m['n_normal']} / {m['n_other_findings']} | "
            + " | ".join(_cell(m, name) for name in METRICS)
            + " |"
        )
    return lines


def _left_out(value: dict | str) -> str:
    if isinstance(value, str):
        return value
    return "; ".join(f"fold {k}: {len(v)}" for k, v in value.items()) or "none"


def markdown_table(results: dict) -> str:
    point = results["operating_point"]
    folds = "; ".join(f"{k}: {', '.join(v)}" for k, v in results["folds"].items())
    parts = [
        "# Leave-source-out cross-validation",
        "",
        "Written by `training.crossval`; do not edit. Films are counted once per seed (two seeds: each film"
        " twice); intervals are 95 % bootstrap intervals over films. Indeterminate counts as no COVID call.",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Folds (held-out sources): {folds}. Seeds: {', '.join(map(str, results['seeds']))}. "
        f"{results['films']} films, {results['predictions']} out-of-source predictions. Left out as copies of films"
        f" that trained in their fold: {_left_out(results['left_out_as_copies_of_trained_films'])}.",
        "",
        "## Estimate for an unseen hospital (cross-fitted operating point)",
        "",
        "Each fold's films judged by the operating point fitted on the other folds' predictions"
        + ("." if results["cross_fitted"] else " (none yet: that needs folds whose others hold both classes)."),
        "",
        *table_rows(results["cross_fitted"]),
        "",
        "Pooled, per seed, and for the mean of the seeds' predictions (the seeds' spread is the noise a recipe"
        " difference must exceed):",
        "",
        *table_rows({name: m["all"] for name, m in results["recipes_cross_fitted"].items()}),
        "",
        "## The operating point fitted on all out-of-source predictions (what `train --operating-point` takes)",
        "",
        point["rule"] + f"; temperature {point['temperature']:.3f}.",
        "",
        *table_rows(results["fitted_on_all"]),
        "",
        "## For comparison: each fold model's own rule (fitted on its internal validation split)",
        "",
        *table_rows(results["fold_models_own_rule"]),
        "",
    ]
    return "\n".join(parts)
