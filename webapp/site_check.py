"""Site check before go-live: a hospital's own known-negative films (pre-pandemic normals are easy to pull
from any PACS) run through the model, to see on day one whether it transfers to that hospital's scanners.

The films go through the upload path's analysis (decode, model, gate) one at a time and are not stored;
only the counts and the distribution of p(covid) are kept (`SiteCheck`), audited, and shown beside the
cross-validation estimate of the model card (`crossval.estimate.all`: what leave-source-out
cross-validation predicts for the normal films of a hospital the model never saw).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flask import current_app

from cxr.decision import INDETERMINATE, POSITIVE_CLASS
from cxr.errors import InputError
from cxr.gate import Refused
from webapp import audit
from webapp.analysis import analyse
from webapp.db import SiteCheck, db
from webapp.model_service import model_service
from webapp.monitoring import quantiles

HISTOGRAM_BINS = 20  # of p(covid) over [0, 1]
Z95 = 1.959964
# outcome → the card's cross-validation metric for normal films that predicts its rate
ESTIMATES = {
    POSITIVE_CLASS: ("specificity", True),  # called COVID = 1 − specificity
    INDETERMINATE: ("indeterminate_normals", False),
    "normal": ("normal_called_normal", False),
}
OUTCOME_TITLES = {POSITIVE_CLASS: "Called COVID-19", INDETERMINATE: "Indeterminate", "normal": "Called normal"}


def wilson(successes: int, n: int) -> tuple[float, float] | None:
    """95 % Wilson score interval of a proportion; None for no trials."""
    if n == 0:
        return None
    p = successes / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n**2)) / (1 + Z95**2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def files_in(folder: Path) -> Iterator[Path]:
    """The regular files under `folder`, in name order (hidden files and symlinks left out)."""
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink() and not any(part.startswith(".") for part in path.parts):
            yield path


def run_site_check(films: Iterable[tuple[str, bytes | None]], label: str, user=None) -> SiteCheck:
    """Analyse each (name, bytes) film — bytes None for one too large to read — store the tally and audit it.
    One film is held in memory at a time."""
    version = model_service.bundle.version
    counts = {"films": 0, "refused": 0, "unreadable": 0, POSITIVE_CLASS: 0, INDETERMINATE: 0, "normal": 0}
    p_covid: list[float] = []
    for _name, data in films:
        counts["films"] += 1
        if data is None:
            counts["unreadable"] += 1
            continue
        try:
            with model_service.analysis_slot():
                analysis = analyse(data)
        except Refused:
            counts["refused"] += 1
            continue
        except InputError:
            counts["unreadable"] += 1
            continue
        decision = analysis.output.decision
        counts[decision if decision in (POSITIVE_CLASS, INDETERMINATE) else "normal"] += 1
        p_covid.append(float(analysis.output.probabilities.get(POSITIVE_CLASS, 0.0)))
    values = np.asarray(p_covid)
    row = SiteCheck(
        label=label.strip()[:128] or "site check",
        model_version=version,
        user_id=user.id if user is not None else None,
        username=user.username if user is not None else None,
        films=counts["films"],
        refused=counts["refused"],
        unreadable=counts["unreadable"],
        covid=counts[POSITIVE_CLASS],
        indeterminate=counts[INDETERMINATE],
        normal=counts["normal"],
        p_covid={
            "quantiles": quantiles(values) or {},
            "histogram": np.histogram(values, bins=HISTOGRAM_BINS, range=(0.0, 1.0))[0].tolist(),
        },
    )
    db.session.add(row)
    db.session.flush()
    audit.record(
        audit.SITE_CHECK,
        user=user,
        target=f"site_check:{row.id}",
        detail=f"{row.films} films ({row.analysed} analysed), model {version}",
    )
    db.session.commit()
    return row


@dataclass(frozen=True)
class Comparison:
    outcome: str
    title: str
    count: int
    rate: float | None
    interval: tuple[float, float] | None
    expected: float | None
    expected_interval: tuple[float, float] | None

    @property
    def verdict(self) -> str:
        """'as expected' when the two 95 % intervals overlap, else 'higher' or 'lower' than expected."""
        if self.interval is None or self.expected_interval is None:
            return "no estimate"
        if self.interval[0] > self.expected_interval[1]:
            return "higher than expected"
        if self.interval[1] < self.expected_interval[0]:
            return "lower than expected"
        return "as expected"


def estimate(card: dict) -> dict | None:
    """The cross-validation figures for normal films of an unseen hospital, from the model card."""
    return ((card.get("crossval") or {}).get("estimate") or {}).get("all")


def compare(row: SiteCheck, card: dict) -> list[Comparison]:
    """Each outcome's rate among the analysed films, beside what cross-validation predicts for normals."""
    expected = estimate(card) if row.model_version == card.get("version") else None
    result = []
    for outcome, (metric, complement) in ESTIMATES.items():
        count = getattr(row, outcome)  # the outcomes name SiteCheck's columns
        value = interval = None
        if expected and expected.get(metric) is not None:
            value = expected[metric]
            interval = (expected.get("interval") or {}).get(metric)
            if complement:
                value = 1.0 - value
                interval = [1.0 - interval[1], 1.0 - interval[0]] if interval else None
        result.append(
            Comparison(
                outcome,
                OUTCOME_TITLES[outcome],
                count,
                count / row.analysed if row.analysed else None,
                wilson(count, row.analysed),
                value,
                tuple(interval) if interval else None,
            )
        )
    return result


def report_lines(row: SiteCheck, card: dict) -> list[str]:
    """The site check as text, for the command line."""
    lines = [
        f"Site check {row.id} '{row.label}', model {row.model_version}: {row.films} films, {row.analysed} analysed, "
        f"{row.refused} refused by the gate, {row.unreadable} unreadable.",
    ]
    for c in compare(row, card):
        observed = "–" if c.rate is None else f"{c.rate:.3f} ({c.interval[0]:.2f}–{c.interval[1]:.2f})"
        expected = "no estimate" if c.expected is None else f"{c.expected:.3f}"
        if c.expected_interval:
            expected += f" ({c.expected_interval[0]:.2f}–{c.expected_interval[1]:.2f})"
        lines.append(f"  {c.title:<16} {c.count:>5}  {observed:<22} cross-validation: {expected:<22} {c.verdict}")
    stored = row.p_covid.get("quantiles") or {}
    if stored:
        lines.append("  p(covid) " + ", ".join(f"q{float(q) * 100:g} {v:.3f}" for q, v in stored.items()))
    return lines


def read_limited(path: Path) -> bytes | None:
    """The file's bytes, or None when it is larger than an upload may be."""
    limit = int(current_app.config["MAX_CONTENT_LENGTH"])
    if path.stat().st_size > limit:
        return None
    return path.read_bytes()
