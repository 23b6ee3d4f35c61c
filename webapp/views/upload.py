"""The upload page: one or several files, each analysed and stored on its own.

Post/Redirect/Get: once anything is stored, the POST redirects, so that reloading the page stores
nothing twice and the form comes back empty (no previous patient's reference). One stored file goes
to its result; several go back to this page, which lists them (`?stored=ids`) with the files that were
refused (flashed). When nothing was stored, the form is shown again with the reasons and the values
for correction.
"""

from __future__ import annotations

from collections import defaultdict

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from cxr.errors import InputError
from webapp.analysis import create_prediction, display_name
from webapp.db import Prediction, db
from webapp.forms import UploadForm
from webapp.views.results import offer_references

bp = Blueprint("upload", __name__)
# Refused files are reported grouped by reason, with at most this many names each: the flashed
# messages travel in the session cookie, which browsers cap at about 4 KB.
NAMES_PER_REASON = 5


@bp.get("/")
def index() -> str:
    return render_template("upload.html", form=UploadForm(formdata=None), stored=_stored_listed())


@bp.post("/")
def upload() -> Response | tuple[str, int]:
    form = UploadForm()
    if not form.validate_on_submit():
        return render_template("upload.html", form=form, stored=[]), 400
    stored: list[Prediction] = []
    refused: dict[str, list[str]] = defaultdict(list)  # reason → file names
    status = 200
    for storage in form.files.data:
        name = display_name(storage.filename)
        try:
            stored.append(
                create_prediction(storage.read(), name, form.reference.data, form.note.data, typed=form.typed_study())
            )
        except InputError as exc:  # this file is reported; the others are still analysed and kept
            refused[exc.message].append(name)
            status = exc.status
    if not stored:
        errors = [f"{', '.join(names)}: {reason}" for reason, names in refused.items()]
        return render_template("upload.html", form=form, stored=[], errors=errors), status
    offer_references(stored)  # shown on the pages redirected to, until a reference is chosen
    if len(form.files.data) == 1:
        return redirect(url_for("results.detail", prediction_id=stored[0].id), 303)
    for reason, names in refused.items():
        shown = ", ".join(n[:80] for n in names[:NAMES_PER_REASON])
        more = f" and {len(names) - NAMES_PER_REASON} more" if len(names) > NAMES_PER_REASON else ""
        flash(f"Not analysed: {shown}{more}. {reason[:400]}", "error")
    return redirect(url_for("upload.index", stored=",".join(str(r.id) for r in stored)), 303)


def _stored_listed() -> list[Prediction]:
    """The predictions named by `?stored=` (the redirect after a multi-file upload), in upload order."""
    ids = []
    for part in request.args.get("stored", "").split(",")[: int(current_app.config["MAX_FILES_PER_UPLOAD"])]:
        if part.isdigit() and len(part) < 19:  # a row id; anything else is ignored
            ids.append(int(part))
    if not ids:
        return []
    rows = db.session.scalars(select(Prediction).where(Prediction.id.in_(ids)).order_by(Prediction.id)).all()
    return list(rows)
