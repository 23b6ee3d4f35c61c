"""The model in use: per model version and per calendar month (UTC) of upload, how many predictions were
made, how many clinicians reviewed, how often they agreed, how the model's decisions compare with their
labels, how often the model withheld a call, and how many uploads the out-of-distribution gate refused.

Definitions (also in the API's answer, `definitions`):
* a prediction's clinician label is the reading of its latest review (the most recently saved review of any
  clinician, preliminary or final); earlier versions of edited reviews and other clinicians' older reviews
  do not count;
* agreement rate: reviewed predictions whose latest reading agrees with the model's decision
  (`webapp.readings.agrees_with_model`) / reviewed;
* confusion: the model's decision (a class or indeterminate) against the clinician's reading, reviewed only;
* OOD refusals: uploads the gate refused, which store no prediction; counted from the audit trail.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import numpy as np
from markupsafe import escape
from sqlalchemy import select

from cxr.decision import INDETERMINATE
from webapp import audit
from webapp.db import AuditEvent, Prediction, Review, SiteCheck, db, within_dates
from webapp.readings import READINGS, agrees_with_model

DEFINITIONS = {
    "clinician_label": "The reading of the prediction's latest review (the most recently saved of any clinician, "
    "preliminary or final): typical, indeterminate, atypical, negative or other.",
    "reviewed_share": "Predictions with at least one review / predictions.",
    "final": "Reviewed predictions whose latest review is final.",
    "agreement_rate": "Reviewed predictions whose latest reading agrees with the model's decision / reviewed "
    "predictions. A typical reading agrees with a COVID-19 call, an indeterminate reading with an indeterminate "
    "decision, and an atypical, negative or other reading with no COVID-19 call.",
    "indeterminate_rate": "Predictions whose decision is indeterminate / predictions.",
    "confusion": "Reviewed predictions counted by model decision (rows) and clinician reading (columns).",
    "ood_refusals": "Uploads refused by the out-of-distribution gate (not stored as predictions).",
    "month": "Calendar month (UTC) of the upload.",
    "p_covid_quantiles": "Quantiles (5, 25, 50, 75 and 95 %) of the calibrated p(covid) of the month's predictions: "
    "a shift between months of one model version is drift in what is uploaded.",
    "site_checks": "Known-negative films of this hospital run through a model before go-live (administration).",
}
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def quantiles(values: list[float] | np.ndarray) -> dict[str, float] | None:
    """`QUANTILES` of p(covid) values, keyed "0.05" … "0.95"; None for no values."""
    if len(values) == 0:
        return None
    return {f"{q:g}": float(v) for q, v in zip(QUANTILES, np.quantile(values, QUANTILES))}


REFUSAL_TARGET = "model:"


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass
class Period:
    """One model version in one month."""

    model_version: str
    month: str  # YYYY-MM, UTC
    predictions: int = 0
    reviewed: int = 0
    final: int = 0
    agreed: int = 0
    indeterminate: int = 0
    ood_refusals: int = 0
    confusion: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    p_covid: list[float] = field(default_factory=list)

    @property
    def p_covid_quantiles(self) -> dict[str, float] | None:
        return quantiles(self.p_covid)

    @property
    def reviewed_share(self) -> float | None:
        return _ratio(self.reviewed, self.predictions)

    @property
    def agreement_rate(self) -> float | None:
        return _ratio(self.agreed, self.reviewed)

    @property
    def indeterminate_rate(self) -> float | None:
        return _ratio(self.indeterminate, self.predictions)

    def as_json(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version, "month": self.month, "predictions": self.predictions,
            "reviewed": self.reviewed, "reviewed_share": self.reviewed_share, "final": self.final,
            "agreed": self.agreed,
            "agreement_rate": self.agreement_rate, "indeterminate": self.indeterminate,
            "indeterminate_rate": self.indeterminate_rate, "ood_refusals": self.ood_refusals,
            "confusion": {decision: dict(labels) for decision, labels in sorted(self.confusion.items())},
            "p_covid_quantiles": self.p_covid_quantiles,
        }  # fmt: skip


@dataclass
class Report:
    periods: list[Period]
    decisions: list[str]  # the confusion's rows
    labels: list[str]  # and its columns: readings
    site_checks: list[SiteCheck] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "definitions": DEFINITIONS,
            "periods": [p.as_json() for p in self.periods],
            "site_checks": [site_check_json(row) for row in self.site_checks],
        }


def site_check_json(row: SiteCheck) -> dict[str, Any]:
    return {
        "id": row.id,
        "created_at": row.created_at.isoformat() + "Z",
        "label": row.label,
        "model_version": row.model_version,
        "films": row.films,
        "analysed": row.analysed,
        "refused": row.refused,
        "unreadable": row.unreadable,
        "covid": row.covid,
        "indeterminate": row.indeterminate,
        "normal": row.normal,
        "p_covid_quantiles": row.p_covid.get("quantiles") or None,
    }


def _month(moment: datetime) -> str:
    return f"{moment:%Y-%m}"


def monitoring_report(date_from: date | None = None, date_to: date | None = None) -> Report:
    """Every model version and month with a prediction or a refusal among uploads on the given UTC days."""
    periods: dict[tuple[str, str], Period] = {}

    def period(version: str, moment: datetime) -> Period:
        key = (version, _month(moment))
        return periods.setdefault(key, Period(*key))

    latest: dict[int, tuple[str, str]] = {}  # prediction id → (reading, status) of its latest review
    reviews = within_dates(
        select(Review.prediction_id, Review.reading, Review.status)
        .join(Prediction, Prediction.id == Review.prediction_id)
        .order_by(Review.updated_at, Review.id),
        Prediction.created_at,
        date_from,
        date_to,
    )
    for prediction_id, reading, status in db.session.execute(reviews):
        latest[prediction_id] = (reading, status)  # ascending: the last one seen is the latest

    predictions = within_dates(
        select(
            Prediction.id,
            Prediction.model_version,
            Prediction.created_at,
            Prediction.decision,
            Prediction.positive_probability,
        ),
        Prediction.created_at,
        date_from,
        date_to,
    )
    decisions, labels = set(), set()
    for prediction_id, version, created_at, decision, p_covid in db.session.execute(predictions):
        row = period(version, created_at)
        row.predictions += 1
        if p_covid is not None:
            row.p_covid.append(p_covid)
        row.indeterminate += decision == INDETERMINATE
        if prediction_id in latest:
            reading, status = latest[prediction_id]
            row.reviewed += 1
            row.final += status == "final"
            row.agreed += agrees_with_model(reading, decision)
            row.confusion[decision][reading] += 1
            decisions.add(decision)
            labels.add(reading)

    refusals = within_dates(
        select(AuditEvent.target, AuditEvent.created_at).where(AuditEvent.action == audit.UPLOAD_REFUSED),
        AuditEvent.created_at,
        date_from,
        date_to,
    )
    for target, created_at in db.session.execute(refusals):
        version = (target or "").removeprefix(REFUSAL_TARGET) or "unknown"
        period(version, created_at).ood_refusals += 1

    ordered = sorted(periods.values(), key=lambda p: (p.month, p.model_version))
    decision_order = sorted(decisions - {INDETERMINATE}) + ([INDETERMINATE] if INDETERMINATE in decisions else [])
    checks = within_dates(
        select(SiteCheck).order_by(SiteCheck.created_at.desc(), SiteCheck.id.desc()),
        SiteCheck.created_at,
        date_from,
        date_to,
    )
    labels_in_order = [reading for reading in READINGS if reading in labels]
    return Report(ordered, decision_order, labels_in_order, list(db.session.scalars(checks)))


# The plot: three bars per period (reviewed share, agreement rate, indeterminate rate), in percent.
SERIES = (
    ("reviewed_share", "Reviewed share", "#4c78a8"),
    ("agreement_rate", "Agreement rate", "#54a24b"),
    ("indeterminate_rate", "Indeterminate rate", "#f58518"),
)
# The plot brings its own background and ink: it is shown as an image on pages of either theme.
PAPER, INK, MUTED = "#ffffff", "#1d2733", "#555555"
BAR, GAP, PLOT_HEIGHT, LEFT, TOP, BOTTOM = 14, 18, 180, 44, 28, 52


def monitoring_svg(report: Report) -> str:
    """An SVG bar chart of the report, drawn on the server (the page loads no script for it)."""
    group = BAR * len(SERIES) + GAP
    width = max(LEFT + len(report.periods) * group + 16, LEFT + 120 * len(SERIES))  # room for the legend
    height = TOP + PLOT_HEIGHT + BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="Reviewed share, agreement and '
        f'indeterminate rate per model version and month" font-family="sans-serif" font-size="11" fill="{INK}">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="{PAPER}"/>',
    ]
    for tick in (0, 25, 50, 75, 100):
        y = TOP + PLOT_HEIGHT * (1 - tick / 100)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{width - 8}" y2="{y:.1f}" stroke="#ccc"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{tick} %</text>')
    for index, (_, name, colour) in enumerate(SERIES):
        x = LEFT + index * 120
        parts.append(f'<rect x="{x}" y="6" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{x + 14}" y="15" class="legend">{name}</text>')
    if not report.periods:
        parts.append(f'<text x="{LEFT + 8}" y="{TOP + PLOT_HEIGHT / 2}">No predictions yet.</text>')
    for index, row in enumerate(report.periods):
        x0 = LEFT + index * group + GAP / 2
        for offset, (attribute, name, colour) in enumerate(SERIES):
            value = getattr(row, attribute)
            if value is None:  # no denominator: nothing drawn rather than a misleading zero
                continue
            bar = PLOT_HEIGHT * value
            parts.append(
                f'<rect x="{x0 + offset * BAR:.1f}" y="{TOP + PLOT_HEIGHT - bar:.1f}" width="{BAR - 2}" '
                f'height="{bar:.1f}" fill="{colour}"><title>{name} {value * 100:.1f} %</title></rect>'
            )
        middle = x0 + BAR * len(SERIES) / 2
        parts.append(f'<text x="{middle:.1f}" y="{TOP + PLOT_HEIGHT + 16}" text-anchor="middle">{row.month}</text>')
        parts.append(
            f'<text x="{middle:.1f}" y="{TOP + PLOT_HEIGHT + 30}" text-anchor="middle" '
            f'fill="{MUTED}">{escape(row.model_version[:10])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
