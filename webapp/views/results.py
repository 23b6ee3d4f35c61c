"""The result page of one prediction (also its detail page), clinician reviews, and its images."""

from __future__ import annotations

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    send_from_directory,
    session,
    url_for,
)
from flask_login import current_user
from werkzeug.wrappers import Response

from cxr.decision import POSITIVE_CLASS
from cxr.overlay import MIME_TYPES
from webapp import audit
from webapp.analysis import confirm_reference
from webapp.db import Prediction, db
from webapp.forms import ReferenceForm, ReviewForm
from webapp.model_service import model_service
from webapp.reviews import own_review, save_review

bp = Blueprint("results", __name__, url_prefix="/predictions")
IMAGE_COLUMNS = {"image": "image_path", "overlay": "overlay_path", "thumbnail": "thumbnail_path"}
# A DICOM header's identifiers, offered as the reference until the clinician picks one. They are not
# stored: they live in the uploading browser's session (which sent them in the file) for its last uploads.
OFFERS_KEY = "reference_offers"
MAX_OFFERS = 20


def offer_references(records: list[Prediction]) -> None:
    offers = dict(session.get(OFFERS_KEY, {}))
    for record in records:
        if record.suggested_reference:
            offers[str(record.id)] = record.suggested_reference
    if offers:
        session[OFFERS_KEY] = dict(list(offers.items())[-MAX_OFFERS:])


@bp.app_template_global()
def offered_reference(record: Prediction) -> dict[str, str] | None:
    """The identifiers offered for `record` in this session, while it has no reference."""
    return None if record.reference else session.get(OFFERS_KEY, {}).get(str(record.id))


def _render(record: Prediction, form: ReviewForm) -> str:
    return render_template("result.html", p=record, form=form, positive_class=POSITIVE_CLASS,
                           own=own_review(record, current_user))


def _review_form(record: Prediction) -> ReviewForm:
    """The review form, showing the clinician's own review when there is one (a POST shows what was sent)."""
    mine = own_review(record, current_user)
    data = None
    if mine is not None:
        data = {"verdict": "agree" if mine.agrees else "disagree",
                "correct_class": "" if mine.agrees else mine.correct_class, "comment": mine.comment or ""}
    return ReviewForm(classes=model_service.bundle.classes, predicted=record.label, data=data)


@bp.get("/<int:prediction_id>")
def detail(prediction_id: int) -> str:
    record = viewed(prediction_id)
    return _render(record, _review_form(record))


def viewed(prediction_id: int) -> Prediction:
    """The prediction, with its viewing recorded in the audit trail (page or API)."""
    record = db.get_or_404(Prediction, prediction_id)
    audit.record(audit.VIEW, target=f"prediction:{record.id}")
    db.session.commit()
    return record


@bp.post("/<int:prediction_id>/reviews")
def review(prediction_id: int) -> Response | tuple[str, int]:
    record = db.get_or_404(Prediction, prediction_id)
    form = _review_form(record)
    if not form.validate_on_submit():
        return _render(record, form), 400
    created = save_review(record, current_user._get_current_object(), form.verdict.data == "agree",
                          form.correct_class.data, form.comment.data)
    flash("Review saved." if created else "Review updated; the earlier version is kept below it.")
    return redirect(url_for("results.detail", prediction_id=record.id, _anchor="reviews"))


@bp.post("/<int:prediction_id>/reference")
def reference(prediction_id: int) -> Response:
    """Set the reference the clinician chose among the identifiers the upload's DICOM header offered."""
    record = db.get_or_404(Prediction, prediction_id)
    form = ReferenceForm()
    if not form.validate_on_submit():
        abort(400, " ".join(" ".join(errors) for errors in form.errors.values()))
    confirm_reference(record, form.reference.data)
    session[OFFERS_KEY] = {k: v for k, v in session.get(OFFERS_KEY, {}).items() if k != str(record.id)}
    flash("Reference saved.")
    return redirect(url_for("results.detail", prediction_id=record.id))


@bp.get("/<int:prediction_id>/<any(image, overlay, thumbnail):kind>.<any(png, jpg):extension>")
def image_file(prediction_id: int, kind: str, extension: str) -> Response:
    record = db.get_or_404(Prediction, prediction_id)
    stored = getattr(record, IMAGE_COLUMNS[kind])
    if not stored.endswith(f".{extension}"):
        abort(404)
    if "api_token" in g:  # a script fetching films in bulk; a browser's fetches belong to a recorded page
        audit.record(audit.IMAGE, target=f"prediction:{record.id}", detail=kind)
        db.session.commit()
    response = send_from_directory(
        current_app.config["UPLOAD_FOLDER"], stored, mimetype=MIME_TYPES[extension], max_age=3600
    )
    response.cache_control.public = False
    response.cache_control.private = True  # patient images: browser cache only, never shared caches
    return response
