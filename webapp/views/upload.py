"""The upload page: one or several files, each analysed and stored on its own.

Post/Redirect/Get: once anything is stored, the POST redirects, so that reloading the page stores
nothing twice and the form comes back empty (no previous patient's reference). One stored file goes
to its result; several go back to this page, which lists them (`?stored=ids`) with the files that were
refused (flashed). A file uploaded before (the same SHA-256) is not stored again: the page links to its
existing prediction, unless the form's "store it again" box is ticked. When nothing was stored, the form
is shown again with the reasons and the values for correction.
"""

from __future__ import annotations

import re
from collections import defaultdict

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from cxr.errors import InputError
from webapp import audit
from webapp.analysis import create_prediction, display_name, find_duplicate, record_duplicate
from webapp.db import Prediction, db
from webapp.forms import UploadForm
from webapp.views.results import offer_references

bp = Blueprint("upload", __name__)
# Refused files are reported grouped by reason, with at most this many names each: the flashed
# messages travel in the session cookie, which browsers cap at about 4 KB.
NAMES_PER_REASON = 5
ROW_ID = re.compile(r"[0-9]{1,18}")


@bp.get("/")
def index() -> str:
    return render_template("upload.html", form=UploadForm(formdata=None), stored=_stored_listed())


@bp.post("/")
def upload() -> Response | tuple[str, int]:
    form = UploadForm()
    if not form.validate_on_submit():
        return render_template("upload.html", form=form, stored=[]), 400
    stored: list[Prediction] = []
    duplicates: list[Prediction] = []  # films uploaded before: linked to, not stored again
    refused: dict[str, list[str]] = defaultdict(list)  # reason → file names
    status = 200
    for storage in form.files.data:
        name = display_name(storage.filename)
        data = storage.read()
        existing = None if form.force.data else find_duplicate(data)
        if existing is not None:
            record_duplicate(existing)
            duplicates.append(existing)
            continue
        try:
            stored.append(create_prediction(data, name, form.reference.data, form.note.data, typed=form.typed_study()))
        except InputError as exc:  # this file is reported; the others are still analysed and kept
            refused[exc.message].append(name)
            status = exc.status
    if not stored and not duplicates:
        errors = [f"{', '.join(names)}: {reason}" for reason, names in refused.items()]
        return render_template("upload.html", form=form, stored=[], errors=errors), status
    offer_references(stored)  # shown on the pages redirected to, until a reference is chosen
    for record in duplicates:
        flash(
            f"{display_name(record.filename)[:80]} was uploaded before: prediction #{record.id} of "
            f"{record.created_at:%Y-%m-%d %H:%M} UTC is shown, and nothing was stored again. To analyse it again "
            "anyway, upload it with “Analyse and store it again” ticked.",
            "info",
        )
    if len(form.files.data) == 1:
        return redirect(url_for("results.detail", prediction_id=(stored or duplicates)[0].id), 303)
    for reason, names in refused.items():
        shown = ", ".join(n[:80] for n in names[:NAMES_PER_REASON])
        more = f" and {len(names) - NAMES_PER_REASON} more" if len(names) > NAMES_PER_REASON else ""
        flash(f"Not analysed: {shown}{more}. {reason[:400]}", "error")
    listed = ",".join(str(r.id) for r in [*stored, *duplicates])
    return redirect(url_for("upload.index", stored=listed), 303)


def _stored_listed() -> list[Prediction]:
    """The predictions named by `?stored=` (the redirect after a multi-file upload), in upload order."""
    ids = []
    for part in request.args.get("stored", "").split(",")[: int(current_app.config["MAX_FILES_PER_UPLOAD"])]:
        if ROW_ID.fullmatch(part):  # a row id; anything else (e.g. "²", a digit to str.isdigit) is ignored
            ids.append(int(part))
    if not ids:
        return []
    rows = db.session.scalars(select(Prediction).where(Prediction.id.in_(ids)).order_by(Prediction.id)).all()
    if rows:  # a listing of studies, recorded like the history's
        audit.record(audit.LIST, target="upload", detail="stored=" + ",".join(str(row.id) for row in rows))
        db.session.commit()
    return list(rows)
