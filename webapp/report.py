"""The one-page A4 PDF report of a prediction, drawn with matplotlib's PDF backend: the same content as the
printed result page (decision, probabilities, threshold, film and overlay, model version, reviews, the
research-use notice)."""

from __future__ import annotations

import io
import textwrap
from datetime import datetime
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from webapp.db import Prediction
from webapp.readings import READINGS, STATUSES
from webapp.serialize import username
from webapp.study import PORTABLE_WARNING, study_facts
from webapp.wording import class_label, decision_label, ood_hint, reason_text

A4_INCHES = (8.27, 11.69)
# The PDF embeds the images at this many pixels on their long side at most: sharper than a printer
# renders them at this size, and a full detector film would make the file many times larger.
IMAGE_MAX_SIDE = 1200
# What fits on the one page; older reviews are counted, and long comments cut.
REVIEWS_SHOWN = 4
COMMENT_LINES = 2
WRAP = 100  # characters per line of body text at its size
NOTICE = "Research use only, not a diagnosis. A clinician makes every clinical decision."
EXPLANATION = (
    "The heatmap (Grad-CAM) explains the CNN feature extractor: the regions that drove its score for the predicted "
    "class. The class comes from an ensemble on the CNN's features, so a highlighted region is not a finding."
)


class _Page:
    """Lines of text from the top of the page down, in figure coordinates."""

    def __init__(self, figure: Figure) -> None:
        self.figure = figure
        self.y = 0.955

    def line(self, text: str, size: float = 9, gap: float = 1.45, **style) -> None:
        # parse_math=False: user text with "$" signs is printed as it is, never parsed as mathtext.
        self.figure.text(0.07, self.y, text, fontsize=size, va="top", parse_math=False, **style)
        self.y -= gap * size / 72 / A4_INCHES[1]

    def space(self, inches: float) -> None:
        self.y -= inches / A4_INCHES[1]


def _image(source: Path | np.ndarray) -> np.ndarray:
    with Image.open(source) if isinstance(source, Path) else Image.fromarray(source) as image:
        image.thumbnail((IMAGE_MAX_SIDE, IMAGE_MAX_SIDE), Image.BILINEAR)
        return np.asarray(image.convert("L") if image.mode not in ("L", "RGB") else image)


def _utc(value: datetime) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC"


def _reading_status(record: Prediction) -> str:
    """Whether a clinician's reading is final: the report says so at the top."""
    final = [review for review in record.reviews if review.status == "final"]
    if final:
        return f"Clinician reading: FINAL ({READINGS[final[0].reading]})."
    if record.reviews:
        return f"Clinician reading: PRELIMINARY ({READINGS[record.reviews[0].reading]}); no final reading yet."
    return "Clinician reading: none yet."


def prediction_pdf(
    record: Prediction,
    film: Path,
    overlay: np.ndarray,
    positive_class: str,
    loaded_version: str,
    unusual_score: float | None = None,
) -> bytes:
    """The report as PDF bytes: one A4 page, with the stored film and its Grad-CAM `overlay` (RGB,
    `webapp.overlays.overlay_rgb_of`). `unusual_score` is the indeterminate cut-off of the model that
    made the prediction, when it is known."""
    figure = Figure(figsize=A4_INCHES)
    page = _Page(figure)
    page.line(f"Chest X-ray triage: prediction #{record.id}", size=15, weight="bold")
    page.line(
        NOTICE,
        size=10,
        weight="bold",
        color="#6b4e00",
        bbox={"facecolor": "#fff4d6", "edgecolor": "#f0d98a", "boxstyle": "round,pad=0.4"},
    )
    page.space(0.08)
    page.line(f"Model: {decision_label(record.decision)}", size=13, weight="bold")
    if record.portable:
        for text in textwrap.wrap(PORTABLE_WARNING, WRAP):
            page.line(text, weight="bold", color="#6b4e00")
    reason = reason_text(record.decision, record.indeterminate_reasons)
    if reason:
        page.line(f"Indeterminate because the film is {reason}: read the film yourself.")
    elif record.decision != positive_class:
        page.line("No COVID-19 features does not mean normal: films with other findings get this outcome too.")
    if record.positive_probability is not None and record.threshold is not None:
        page.line(
            f"Calibrated p(COVID-19): {record.positive_probability * 100:.1f} %; COVID-19 features from "
            f"{record.threshold * 100:.1f} % (the threshold)."
        )
    else:
        page.line(f"No operating threshold: the most probable class ({record.label}) is predicted.")
    page.line(_reading_status(record), weight="bold")
    page.space(0.05)
    page.line(f"{'class':<34}{'ensemble':>10}{'CNN':>10}", family="monospace", weight="bold")
    for cls, value in sorted(record.probabilities.items()):
        cnn = record.cnn_probabilities.get(cls)
        cnn_text = "—" if cnn is None else f"{cnn * 100:.1f} %"
        page.line(f"{class_label(cls)[:34]:<34}{value * 100:>8.1f} %{cnn_text:>10}", family="monospace")
    page.space(0.05)
    uploader = username(record)
    version = record.model_version + ("" if record.model_version == loaded_version else " (not the model now loaded)")
    for label, value in (
        ("Reference", record.reference or "—"),
        ("File", record.filename),
        *((label, value) for label, value in study_facts(record) if not label.endswith("UID")),
        ("Analysed", _utc(record.created_at) + (f" by {uploader}" if uploader else "")),
        ("Model version", version),
        ("Out-of-distribution score", f"{record.ood_score:.2f} ({ood_hint(unusual_score, record.model_version)})"),
        ("SHA-256", record.sha256),
    ):
        text = f"{label}: {' '.join(value.split())}"
        page.line(text if len(text) <= WRAP else text[: WRAP - 1] + "…")

    images_top = page.y - 0.01
    height = 0.33
    for left, path, title in ((0.07, film, "Film (as analysed)"), (0.52, overlay, "Grad-CAM overlay")):
        axes = figure.add_axes((left, images_top - height, 0.41, height))
        axes.imshow(_image(path), cmap="gray", vmin=0, vmax=255, interpolation="bilinear")
        axes.set_title(title, fontsize=9)
        axes.set_axis_off()
    page.y = images_top - height - 0.012
    for text in textwrap.wrap(EXPLANATION, WRAP + 10):
        page.line(text, size=8, color="#5b6775")

    page.space(0.1)
    page.line("Clinician readings", size=11, weight="bold")
    if not record.reviews:
        page.line("No reading yet.")
    for review in record.reviews[:REVIEWS_SHOWN]:
        agreement = "agrees" if review.agrees else "disagrees"
        verdict = f"{STATUSES[review.status]}: {READINGS[review.reading]} ({agreement} with the model)"
        reviewer = username(review)
        page.line(f"{verdict} · {_utc(review.updated_at)}" + (f" · {reviewer}" if reviewer else ""), weight="bold")
        if review.comment:
            for text in textwrap.wrap(
                " ".join(review.comment.split()), WRAP, max_lines=COMMENT_LINES, placeholder=" …"
            ):
                page.line(text, color="#333333")
    if len(record.reviews) > REVIEWS_SHOWN:
        page.line(f"… and {len(record.reviews) - REVIEWS_SHOWN} older review(s), on the result page.")

    figure.text(
        0.07, 0.03, f"{NOTICE} Model version {record.model_version}.", fontsize=7, color="#5b6775", parse_math=False
    )
    buffer = io.BytesIO()
    metadata = {"Title": f"Prediction #{record.id}", "Creator": "Chest X-ray triage"}
    figure.savefig(buffer, format="pdf", metadata=metadata)
    return buffer.getvalue()
