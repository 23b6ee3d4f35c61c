"""The upload page: one or several files, each analysed and stored on its own."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, redirect, render_template, url_for
from werkzeug.wrappers import Response

from cxr.errors import InputError
from webapp.analysis import create_prediction, display_name
from webapp.db import Prediction
from webapp.forms import ReferenceForm, UploadForm

bp = Blueprint("upload", __name__)


@dataclass(frozen=True)
class Outcome:
    filename: str
    record: Prediction | None = None
    error: str | None = None
    status: int = 200


@bp.route("/", methods=("GET", "POST"))
def index() -> Response | str | tuple[str, int]:
    form = UploadForm()
    if not form.validate_on_submit():
        return render_template("upload.html", form=form), 400 if form.errors else 200
    outcomes = []
    for storage in form.files.data:
        name = display_name(storage.filename)
        try:
            record = create_prediction(storage.read(), name, form.reference.data, form.note.data)
        except InputError as exc:  # this file is reported; the others are still analysed and kept
            outcomes.append(Outcome(name, error=exc.message, status=exc.status))
        else:
            outcomes.append(Outcome(name, record=record))
    stored = [o for o in outcomes if o.record]
    # A DICOM header's identifiers are only offered, on this answer, and stored once the clinician picks one;
    # so an upload that offers them shows its outcome instead of going straight to the result.
    if len(outcomes) == 1 and stored and not stored[0].record.suggested_reference:
        return redirect(url_for("results.detail", prediction_id=stored[0].record.id))
    status = 200 if stored else outcomes[0].status
    return render_template("upload.html", form=form, outcomes=outcomes, reference_form=ReferenceForm()), status
