"""What the model means, in the clinician's words: "COVID-19 features", "No COVID-19 features" (never
"normal") or "Indeterminate — read it yourself" with its reason; the calibrated p(COVID-19) on a bar with the
threshold marked, which never contradicts the badge; the out-of-distribution hint at the indeterminate
cut-off; the same words in the API, the PDF, the model card page and the README."""

from __future__ import annotations

import re

import numpy as np
import pytest

from cxr.decision import INDETERMINATE, NEAR_THRESHOLD, UNLIKE_TRAINING, Rule
from tests.helpers import ROOT
from webapp.db import Prediction, db
from webapp.wording import COVID_FEATURES, NO_COVID_FEATURES, READ_IT_YOURSELF

RULE = Rule(("covid", "normal"), threshold=0.3, indeterminate_below=0.1, unusual_score=0.6)


@pytest.mark.parametrize(
    "p_covid, ood, outcome, reasons",
    [
        (0.5, 0.9, "covid", ()),  # a COVID call is never withheld, however unusual the film
        (0.05, 0.2, "normal", ()),
        (0.2, 0.2, INDETERMINATE, (NEAR_THRESHOLD,)),
        (0.05, 0.7, INDETERMINATE, (UNLIKE_TRAINING,)),
        (0.2, 0.7, INDETERMINATE, (NEAR_THRESHOLD, UNLIKE_TRAINING)),
    ],
)
def test_the_rule_names_why_a_film_is_indeterminate(p_covid, ood, outcome, reasons):
    probabilities = np.array([p_covid, 1 - p_covid])
    assert RULE.outcomes(probabilities, np.array([ood])) == [outcome]
    assert RULE.reasons(probabilities, ood) == reasons


def set_outcome(app, prediction_id: int, **values) -> None:
    """Give a stored prediction a chosen outcome, since one test film always scores the same."""
    with app.app_context():
        row = db.session.get(Prediction, prediction_id)
        for name, value in values.items():
            setattr(row, name, value)
        if "positive_probability" in values:
            p = values["positive_probability"]
            row.probabilities = {"covid": p, "normal": 1 - p}
        db.session.commit()


def meter(html: str) -> tuple[float, float]:
    """The bar's fill width and the threshold line's position, in percent of the bar."""
    fill = re.search(r'<rect class="meter-fill[^"]*" x="0" y="3" width="([\d.]+)"', html)
    line = re.search(r'<line class="meter-threshold" x1="([\d.]+)"', html)
    assert fill and line, "no p(COVID-19) bar on the page"
    return float(fill[1]), float(line[1])


# The threshold in force when the issue's case was seen (model 0b91c30dfdaea67b): the page draws each
# prediction against the threshold stored with it, whatever the model loaded now.
ISSUE_THRESHOLD = 0.141


@pytest.mark.parametrize(
    "decision, label, p_covid, reasons, reason_words",
    [
        ("covid", COVID_FEATURES, 0.205, [], None),  # the issue's case: a COVID call at p = 20.5 %
        ("normal", NO_COVID_FEATURES, 0.02, [], None),
        (INDETERMINATE, READ_IT_YOURSELF, 0.09, [NEAR_THRESHOLD], "near the threshold"),
        (INDETERMINATE, READ_IT_YOURSELF, 0.01, [UNLIKE_TRAINING], "unlike the training films"),
        (INDETERMINATE, READ_IT_YOURSELF, 0.01, None, "not recorded for this prediction"),
    ],
)
def test_result_page_says_what_the_model_means(app, client, upload, decision, label, p_covid, reasons, reason_words):
    prediction = upload()
    set_outcome(
        app,
        prediction["id"],
        decision=decision,
        label="covid" if decision == "covid" else "normal",
        positive_probability=p_covid,
        indeterminate_reasons=reasons,
        threshold=ISSUE_THRESHOLD,
    )
    html = client.get(f"/predictions/{prediction['id']}").get_data(as_text=True)
    assert f'<span class="label label-{decision}" id="decision" data-decision="{decision}">{label}</span>' in html
    assert ">normal<" not in html and "Normal" not in html  # the non-COVID class is never shown as "normal"
    if reason_words:
        reason = re.search(r'id="decision-reason">(.*?)</p>', html, re.S)[1]
        assert reason_words in " ".join(reason.split()) and "read the film yourself" in reason
    else:
        assert 'id="decision-reason"' not in html

    # The bar shows the calibrated p(COVID-19) against the threshold, so it agrees with the badge.
    width, threshold = meter(html)
    assert width == pytest.approx(p_covid * 100, abs=1e-3)
    assert threshold == pytest.approx(ISSUE_THRESHOLD * 100, abs=1e-3)  # the prediction's own threshold
    assert (width >= threshold) == (decision == "covid")
    assert f"{p_covid * 100:.1f} %</strong> calibrated p(COVID-19)" in html

    api = client.get(f"/api/v1/predictions/{prediction['id']}").get_json()
    assert (api["decision"], api["decision_label"]) == (decision, label)  # the value kept, the label added
    assert api["indeterminate_reasons"] == reasons


def test_indeterminate_band_is_marked_and_the_ood_hint_uses_its_cut_off(client, upload, bundle):
    prediction = upload()
    html = client.get(f"/predictions/{prediction['id']}").get_data(as_text=True)
    rule = bundle.rule
    band = re.search(r'<rect class="meter-band" x="([\d.]+)" y="2" width="([\d.]+)"', html)
    assert band and float(band[1]) == pytest.approx(rule.indeterminate_below * 100, abs=1e-3)
    assert float(band[1]) + float(band[2]) == pytest.approx(bundle.threshold * 100, abs=1e-2)
    hint = " ".join(re.search(r'id="ood-hint">(.*?)</span>', html, re.S)[1].split())
    assert hint == (
        f"(above {rule.unusual_score:.2f} the film is unlike the training films, so indeterminate; "
        "above 1.00 an upload is refused)"
    )
    assert "at most 1.00" not in html


def test_history_priors_and_pdf_use_the_same_words(app, client, upload, monkeypatch):
    from matplotlib.figure import Figure

    first, second = upload(reference="R"), upload(reference="R")
    set_outcome(app, first["id"], decision="normal", label="normal", positive_probability=0.02)
    client.post(f"/predictions/{first['id']}/reviews", data={"reading": "atypical", "status": "preliminary"})
    history = client.get("/history").get_data(as_text=True)
    assert f'data-decision="normal">{NO_COVID_FEATURES}</span>' in history and ">normal<" not in history
    priors = client.get(f"/predictions/{second['id']}").get_data(as_text=True)
    assert f'<span class="label label-normal">{NO_COVID_FEATURES}</span>' in priors and "p(COVID-19) 2.0 %" in priors
    written: list[str] = []  # the PDF's lines of text, as drawn
    draw = Figure.text
    monkeypatch.setattr(
        Figure, "text", lambda self, x, y, s, *a, **k: written.append(s) or draw(self, x, y, s, *a, **k)
    )
    pdf = client.get(f"/predictions/{first['id']}/report.pdf")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")
    assert f"Model: {NO_COVID_FEATURES}" in written and "Calibrated p(COVID-19): 2.0 %" in " ".join(written)
    assert (
        "Clinician reading: PRELIMINARY (Atypical appearance for COVID-19 pneumonia); no final reading yet." in written
    )
    assert not [line for line in written if "normal" in line.lower().split()]
    client.post(f"/predictions/{first['id']}/reviews", data={"reading": "atypical", "status": "final"})
    written.clear()
    client.get(f"/predictions/{first['id']}/report.pdf")
    assert "Clinician reading: FINAL (Atypical appearance for COVID-19 pneumonia)." in written


def test_model_card_page_and_readme_use_the_same_words(client):
    html = client.get("/model").get_data(as_text=True)
    words = " ".join(re.search(r'id="outcome-words">(.*?)</dd>', html, re.S)[1].split())
    readme = " ".join((ROOT / "README.md").read_text().split())
    for label in (COVID_FEATURES, NO_COVID_FEATURES, READ_IT_YOURSELF):
        assert label in words and f"**{label}**" in readme
