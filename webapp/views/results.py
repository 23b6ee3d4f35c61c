"""The result page of one prediction (also its detail page), clinician reviews, its images, its priors (the
other studies with the same reference) side by side, and its one-page PDF report."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    send_from_directory,
    url_for,
)
from flask_login import current_user
from sqlalchemy import func, select
from werkzeug.wrappers import Response

from cxr.decision import POSITIVE_CLASS
from cxr.overlay import FILE_FORMATS, MIME_TYPES, jpeg_bytes
from webapp import audit
from webapp.accounts import current_session
from webapp.analysis import confirm_reference
from webapp.db import Prediction, db
from webapp.forms import ReferenceForm, ReviewForm, TriageForm
from webapp.model_service import model_service
from webapp.overlays import overlay_rgb_of
from webapp.report import prediction_pdf
from webapp.reviews import own_review, save_review
from webapp.templating import rule_of
from webapp.triage import CLAIM_MINUTES, active_claim, claim, release, set_urgent

bp = Blueprint("results", __name__, url_prefix="/predictions")
IMAGE_COLUMNS = {
    "image": "image_path",
    "heatmap": "heatmap_path",  # the small Grad-CAM map (cxr.overlay.heatmap_png), for the viewer to colour
    "overlay": "overlay_path",  # stored for rows from before the heatmap; rendered from it for newer rows
    "thumbnail": "thumbnail_path",
    "depth": "depth_path",  # a DICOM's full bit depth (16-bit PNG), for the viewer
}
PRIORS_SHOWN = 20  # the newest; the history's reference search finds the rest
# A DICOM header's identifiers, offered as the reference until the clinician picks one. They are not
# stored with the study: they live in the uploading browser's server-side session (UserSession), for its
# last uploads, and end with it.
MAX_OFFERS = 20


def offer_references(records: list[Prediction]) -> None:
    """Keep the DICOM identifiers of these new uploads as offers of this browser's session (committed)."""
    row = current_session()
    new = {str(record.id): record.suggested_reference for record in records if record.suggested_reference}
    if row is None or not new:
        return
    offers = {**(row.reference_offers or {}), **new}
    row.reference_offers = dict(list(offers.items())[-MAX_OFFERS:])  # a new value: JSON is not tracked in place
    db.session.commit()


@bp.app_template_global()
def offered_reference(record: Prediction) -> dict[str, str] | None:
    """The identifiers offered for `record` in this session, while it has no reference."""
    row = current_session()
    return None if record.reference or row is None else (row.reference_offers or {}).get(str(record.id))


def _render(record: Prediction, form: ReviewForm) -> str:
    priors, prior_count = _priors(record)
    return render_template(
        "result.html",
        p=record,
        form=form,
        positive_class=POSITIVE_CLASS,
        own=own_review(record, current_user),
        holder=active_claim(record),
        priors=priors,
        prior_count=prior_count,
    )


def _same_reference(record: Prediction):
    return (Prediction.reference == record.reference, Prediction.id != record.id)


def _priors(record: Prediction) -> tuple[list[Prediction], int]:
    """The newest other studies (by study date) with exactly this reference, and how many there are (none
    without one)."""
    if not record.reference:
        return [], 0
    rows = db.session.scalars(
        select(Prediction)
        .where(*_same_reference(record))
        # By study date (when the film was taken), newest first; films without one by when they were analysed.
        .order_by(Prediction.study_date.desc().nulls_last(), Prediction.created_at.desc(), Prediction.id.desc())
        .limit(PRIORS_SHOWN)
    ).all()
    count = len(rows)
    if count == PRIORS_SHOWN:
        count = db.session.scalar(select(func.count()).select_from(Prediction).where(*_same_reference(record)))
    return list(rows), count


def _review_form(record: Prediction) -> ReviewForm:
    """The review form, showing the clinician's own review when there is one (a POST shows what was sent)."""
    mine = own_review(record, current_user)
    data = None
    if mine is not None:
        data = {"reading": mine.reading, "status": mine.status, "comment": mine.comment or ""}
    return ReviewForm(data=data)


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


@bp.get("/<int:prediction_id>/compare/<int:other_id>")
def compare(prediction_id: int, other_id: int) -> str | tuple[str, int]:
    """Two studies with the same reference side by side, each in its own viewer."""
    if prediction_id == other_id:
        abort(400, "Choose two different studies to compare.")
    first, second = db.get_or_404(Prediction, prediction_id), db.get_or_404(Prediction, other_id)
    if not first.reference or first.reference != second.reference:
        abort(400, "Only studies with the same reference can be compared side by side.")
    # Both exist and may be compared: each viewing is recorded (the rows come from the session's identity map).
    return render_template("compare.html", studies=(viewed(first.id), viewed(second.id)))


@bp.get("/<int:prediction_id>/report.pdf")
def report(prediction_id: int) -> Response:
    return report_download(prediction_id)


def report_download(prediction_id: int) -> Response:
    """The one-page A4 report, as a download (from the result page, or from the API for record systems);
    recorded in the audit trail like any export."""
    record = db.get_or_404(Prediction, prediction_id)
    folder = Path(current_app.config["UPLOAD_FOLDER"])
    rule = rule_of(record)
    pdf = prediction_pdf(
        record,
        folder / record.image_path,
        overlay_rgb_of(record, folder),
        POSITIVE_CLASS,
        model_service.bundle.version,
        rule.unusual_score if rule else None,
    )
    via_api = request.blueprint == "api"
    audit.record(
        audit.EXPORT, target=f"prediction:{record.id}", detail="report.pdf via the API" if via_api else "report.pdf"
    )
    db.session.commit()
    name = f"cxr-prediction-{record.id}.pdf"  # built from the id only: nothing a user typed
    return Response(pdf, mimetype="application/pdf", headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.post("/<int:prediction_id>/reviews")
def review(prediction_id: int) -> Response | tuple[str, int]:
    record = db.get_or_404(Prediction, prediction_id)
    form = _review_form(record)
    if not form.validate_on_submit():
        return _render(record, form), 400
    created = save_review(
        record, current_user._get_current_object(), form.reading.data, form.status.data, form.comment.data
    )
    flash("Reading saved." if created else "Reading updated; the earlier version is kept below it.")
    return redirect(url_for("results.detail", prediction_id=record.id, _anchor="reviews"))


@bp.post("/<int:prediction_id>/claim")
def claim_film(prediction_id: int) -> Response:
    """Claim the film to read it (so that nobody else does meanwhile), or release it (`action=release`)."""
    record = db.get_or_404(Prediction, prediction_id)
    form = TriageForm()
    if not form.validate_on_submit() or form.action.data not in ("claim", "release"):
        abort(400, "Send action=claim or action=release.")
    user = current_user._get_current_object()
    if form.action.data == "claim":
        claim(record, user)
        flash(f"You are reading this film: nobody else can save a reading for {CLAIM_MINUTES} minutes.")
    else:
        release(record, user)
        flash("Released: others may read this film.")
    return redirect(url_for("results.detail", prediction_id=record.id))


@bp.post("/<int:prediction_id>/urgent")
def urgent(prediction_id: int) -> Response:
    """Flag the film urgent (first on the worklist) or not (`action=urgent` / `action=routine`)."""
    record = db.get_or_404(Prediction, prediction_id)
    form = TriageForm()
    if not form.validate_on_submit() or form.action.data not in ("urgent", "routine"):
        abort(400, "Send action=urgent or action=routine.")
    set_urgent(record, current_user._get_current_object(), form.action.data == "urgent")
    flash("Flagged urgent: it goes first on the worklist." if record.urgent else "No longer flagged urgent.")
    return redirect(url_for("results.detail", prediction_id=record.id))


@bp.post("/<int:prediction_id>/reference")
def reference(prediction_id: int) -> Response:
    """Set the reference the clinician chose among the identifiers the upload's DICOM header offered."""
    record = db.get_or_404(Prediction, prediction_id)
    form = ReferenceForm()
    if not form.validate_on_submit():
        abort(400, " ".join(" ".join(errors) for errors in form.errors.values()))
    row = current_session()
    if row is not None and row.reference_offers:  # committed with the reference, or not at all
        row.reference_offers = {k: v for k, v in row.reference_offers.items() if k != str(record.id)}
    confirm_reference(record, form.reference.data)
    flash("Reference saved.")
    return redirect(url_for("results.detail", prediction_id=record.id))


@bp.get("/<int:prediction_id>/<any(image, heatmap, overlay, thumbnail, depth):kind>.<any(png, jpg):extension>")
def image_file(prediction_id: int, kind: str, extension: str) -> Response:
    """A stored file; the overlay of a prediction with a heatmap is rendered from the film and the heatmap."""
    record = db.get_or_404(Prediction, prediction_id)
    rendered = kind == "overlay" and record.heatmap_path is not None
    stored = None if rendered else getattr(record, IMAGE_COLUMNS[kind])
    if extension != (FILE_FORMATS[kind] if rendered else PurePosixPath(stored or "").suffix.lstrip(".")):
        abort(404)
    # Every read of a film is recorded, whoever reads it: a copy of a session cookie fetches films without
    # opening any recorded page.
    audit.record(audit.IMAGE, target=f"prediction:{record.id}", detail=kind)
    db.session.commit()
    folder = Path(current_app.config["UPLOAD_FOLDER"])
    if not rendered:
        response = send_from_directory(folder, stored, mimetype=MIME_TYPES[extension], max_age=3600)
    else:
        try:
            response = Response(jpeg_bytes(overlay_rgb_of(record, folder)), mimetype=MIME_TYPES[extension])
        except FileNotFoundError:  # as send_from_directory answers for a stored file that is gone
            abort(404)
        response.cache_control.max_age = 3600
    response.cache_control.public = False
    response.cache_control.private = True  # patient images: browser cache only, never shared caches
    return response
