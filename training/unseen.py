"""Figures per source at the deployed decision rule: what a hospital whose films were never trained
on would see. Normal films give the specificity, COVID films the sensitivity, films with other
findings the share not called COVID; the ROC AUC (COVID against everything else) where a source
has both, and the calibration error (ECE) of p(covid)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from cxr.decision import INDETERMINATE, POSITIVE_CLASS
from training.metrics import expected_calibration_error

NORMAL = "normal"


def _rate(flags: np.ndarray) -> float | None:
    return float(flags.mean()) if flags.size else None


def outcome_metrics(labels: Sequence[str], p_covid: np.ndarray, outcomes: Sequence[str]) -> dict:
    """Metrics of one group of films; `labels` are the original labels (normal, covid, other findings)."""
    labels, outcomes, p_covid = np.asarray(labels), np.asarray(outcomes), np.asarray(p_covid, dtype=np.float64)
    is_covid, is_normal = labels == POSITIVE_CLASS, labels == NORMAL
    called = outcomes == POSITIVE_CLASS
    both = is_covid.any() and (~is_covid).any()
    return {
        "n": int(labels.size),
        "n_covid": int(is_covid.sum()),
        "n_normal": int(is_normal.sum()),
        "n_other_findings": int((~is_covid & ~is_normal).sum()),
        "sensitivity": _rate(called[is_covid]),
        "specificity": _rate(~called[is_normal]),
        "normal_called_normal": _rate(outcomes[is_normal] == NORMAL),
        "indeterminate_normals": _rate(outcomes[is_normal] == INDETERMINATE),
        "other_findings_not_called_covid": _rate(~called[~is_covid & ~is_normal]),
        "indeterminate_rate": _rate(outcomes == INDETERMINATE),
        "roc_auc": float(roc_auc_score(is_covid, p_covid)) if both else None,
        "ece": expected_calibration_error(is_covid.astype(int), np.column_stack([1 - p_covid, p_covid])),
    }


def per_source(labels: Sequence[str], p_covid: np.ndarray, outcomes: Sequence[str], sources: Sequence[str]) -> dict:
    """`outcome_metrics` for every source and for all of them pooled ("all")."""
    sources = np.asarray(sources)
    labels, outcomes, p_covid = np.asarray(labels), np.asarray(outcomes), np.asarray(p_covid)
    result = {
        s: outcome_metrics(labels[sources == s], p_covid[sources == s], outcomes[sources == s])
        for s in sorted(set(sources.tolist()))
    }
    result["all"] = outcome_metrics(labels, p_covid, outcomes)
    return result


def format_sources(metrics: dict, title: str) -> str:
    """A plain-text table of `per_source` output."""

    def cell(value: float | None) -> str:
        return f"{value:>9.3f}" if value is not None else f"{'–':>9}"

    header = (
        f"{'source':<14}{'n':>5}{'covid':>6}{'normal':>7}{'other':>6}{'sens':>9}{'spec':>9}"
        f"{'other ok':>9}{'indet.':>9}{'AUC':>9}{'ECE':>9}"
    )
    lines = [title, header, "-" * len(header)]
    for source, m in metrics.items():
        lines.append(
            f"{source:<14}{m['n']:>5}{m['n_covid']:>6}{m['n_normal']:>7}{m['n_other_findings']:>6}"
            + "".join(
                cell(m[k])
                for k in (
                    "sensitivity",
                    "specificity",
                    "other_findings_not_called_covid",
                    "indeterminate_rate",
                    "roc_auc",
                    "ece",
                )
            )
        )
    return "\n".join(lines)
