"""What the model's outcome means, in the words a clinician reads: the page, the PDF report, the API's
human-readable fields, the README and the model card page all use these.

The model's non-COVID class ("normal") was trained on normal films *and* films with other findings, so it
means "no COVID-19 call", never "no finding": it is shown as "No COVID-19 features".
"""

from __future__ import annotations

from collections.abc import Iterable

from cxr.decision import INDETERMINATE, NEAR_THRESHOLD, POSITIVE_CLASS, UNLIKE_TRAINING

COVID_FEATURES = "COVID-19 features"
NO_COVID_FEATURES = "No COVID-19 features"
READ_IT_YOURSELF = "Indeterminate — read it yourself"
REASONS = {
    NEAR_THRESHOLD: "near the threshold",
    UNLIKE_TRAINING: "unlike the training films",
}
# Shown for an indeterminate prediction stored before its reason was recorded.
UNKNOWN_REASON = "near the threshold or unlike the training films (not recorded for this prediction)"


def decision_label(decision: str) -> str:
    """The human label of a stored decision ("covid", another class, or "indeterminate")."""
    if decision == POSITIVE_CLASS:
        return COVID_FEATURES
    if decision == INDETERMINATE:
        return READ_IT_YOURSELF
    return NO_COVID_FEATURES


def reason_text(decision: str, reasons: Iterable[str] | None) -> str | None:
    """Why an indeterminate decision is indeterminate, in words ("near the threshold and unlike the training
    films"); None for any other decision."""
    if decision != INDETERMINATE:
        return None
    if reasons is None:
        return UNKNOWN_REASON
    return " and ".join(REASONS[reason] for reason in reasons if reason in REASONS) or UNKNOWN_REASON


def ood_hint(unusual_score: float | None, model_version: str) -> str:
    """What an out-of-distribution score means, with the indeterminate cut-off of the model that made the
    prediction when it is known (the loaded model's rule)."""
    if unusual_score is None:
        return f"above 1.00 an upload is refused; the indeterminate cut-off of model {model_version} is not loaded"
    return (
        f"above {unusual_score:.2f} the film is unlike the training films, so indeterminate; "
        "above 1.00 an upload is refused"
    )


def class_label(cls: str) -> str:
    """A model class in a table of every class's probability: the non-COVID classes are named as what they
    mean for COVID-19, with the model's own name in quotes (so "normal" never reads as "no finding")."""
    return "COVID-19" if cls == POSITIVE_CLASS else f"no COVID-19 call (class “{cls}”)"
