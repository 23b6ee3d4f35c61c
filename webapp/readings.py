"""The clinician's reading of a film, in the RSNA consensus categories for COVID-19 on chest radiographs
(typical, indeterminate or atypical appearance, negative for pneumonia) or another finding, and how it
compares with the model's decision. No database or Flask here: the tables, the forms, the API, the
monitoring and the export all read these."""

from __future__ import annotations

from cxr.decision import INDETERMINATE, POSITIVE_CLASS

OTHER = "other"
READINGS = {
    "typical": "Typical appearance for COVID-19 pneumonia",
    "indeterminate": "Indeterminate appearance for COVID-19 pneumonia",
    "atypical": "Atypical appearance for COVID-19 pneumonia",
    "negative": "Negative for pneumonia",
    OTHER: "Other finding (name it in the comment)",
}
FINAL = "final"
STATUSES = {"preliminary": "Preliminary", FINAL: "Final"}
# Each reading's place among the model's outcomes: a COVID-19 call, no call either way, or no COVID-19 call.
NO_COVID = "no_covid"
READING_OUTCOME = {
    "typical": POSITIVE_CLASS,
    "indeterminate": INDETERMINATE,
    "atypical": NO_COVID,
    "negative": NO_COVID,
    OTHER: NO_COVID,
}
# The label `flask export-reviewed` writes for training (`training/data.py` trains "other" as the non-COVID
# class with the default --negatives); an indeterminate reading gives no label and is left out.
TRAINING_LABELS = {"typical": POSITIVE_CLASS, "negative": "normal", "atypical": "other", OTHER: "other"}


def agrees_with_model(reading: str, decision: str) -> bool:
    """Whether a reading agrees with the model's decision: a typical reading with a COVID-19 call, an
    indeterminate reading with an indeterminate decision, and any other reading with no COVID-19 call."""
    model = decision if decision in (POSITIVE_CLASS, INDETERMINATE) else NO_COVID
    return READING_OUTCOME[reading] == model
