"""Flask-WTF forms: the upload and review forms (CSRF-protected), the API upload fields, the base of
every filter form (GET parameters), and the history filters shared by the history page, its CSV export
and the JSON API."""

from __future__ import annotations

from datetime import date

from flask import current_app
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired, MultipleFileField
from wtforms import BooleanField, Form, RadioField, SelectChoice, SelectField, StringField, SubmitField, TextAreaField
from wtforms.fields import DateField
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from cxr.decision import INDETERMINATE
from webapp.accounts import find_user
from webapp.analysis import reference_problem
from webapp.readings import READINGS, STATUSES
from webapp.reviews import MAX_COMMENT, review_problem
from webapp.wording import class_label, decision_label

ACCEPT = ".png,.jpg,.jpeg,.tif,.tiff,.dcm,.dicom,image/png,image/jpeg,image/tiff,application/dicom"


def usable_reference(form: Form, field: StringField) -> None:
    """A reference field's value, when given, is one `reference_problem` accepts."""
    problem = reference_problem((field.data or "").strip()) if (field.data or "").strip() else None
    if problem:
        raise ValidationError(problem)


def known(values: list[str], what: str):
    """A validator: the field is empty or one of `values` (read when validating, so it may be set later)."""

    def check(form: Form, field) -> None:
        if field.data and field.data not in values:
            raise ValidationError(f"Unknown {what} '{field.data}'.")

    return check


class DetailsMixin:
    reference = StringField("Patient or study reference", validators=[Optional(), usable_reference])
    note = TextAreaField("Note", validators=[Optional(), Length(max=2000)])
    # For PNG/JPEG films, which carry no DICOM header; a DICOM file's own header wins (webapp.analysis.set_study).
    view_position = SelectField(
        "View",
        choices=[
            SelectChoice("", "Not given"),
            SelectChoice("PA", "PA (posteroanterior)"),
            SelectChoice("AP", "AP (anteroposterior, portable)"),
        ],
        validators=[known(["PA", "AP"], "view")],
        validate_choice=False,
    )
    study_date = DateField("Study date", validators=[Optional()])

    def validate_study_date(self, field: DateField) -> None:
        if field.data and field.data > date.today():
            raise ValidationError("The study date is in the future.")

    def typed_study(self) -> dict[str, object]:
        """The view position and study date typed for a film without a DICOM header."""
        return {"view_position": self.view_position.data or None, "study_date": self.study_date.data}


class UploadForm(DetailsMixin, FlaskForm):
    files = MultipleFileField(
        "Chest X-ray images (PNG, JPEG, TIFF or DICOM)",
        validators=[FileRequired("Choose at least one image.")],
        render_kw={"accept": ACCEPT},
    )
    force = BooleanField("Analyse and store it again even if the same file was uploaded before")
    submit = SubmitField("Analyse")

    def validate_files(self, field: MultipleFileField) -> None:
        limit = int(current_app.config["MAX_FILES_PER_UPLOAD"])
        if len(field.data) > limit:
            raise ValidationError(f"Upload at most {limit} images at a time.")


class ApiUploadForm(DetailsMixin, FlaskForm):
    class Meta:
        csrf = False  # API clients do not hold a session

    file = FileField(validators=[FileRequired("Send the image in the multipart field 'file'.")])


class ReferenceForm(FlaskForm):
    """Confirms an identifier from an uploaded DICOM's header as the prediction's reference."""

    reference = StringField("Reference", validators=[DataRequired("Choose the reference."), usable_reference])


class TriageForm(FlaskForm):
    """A worklist button: claim or release a film, flag it urgent or routine (the button's value)."""

    action = StringField(validators=[DataRequired()])


class ReviewForm(FlaskForm):
    """The clinician's own reading (`webapp.readings.READINGS`), preliminary or final, and a comment."""

    reading = RadioField(
        "Your reading",
        choices=[SelectChoice(key, text) for key, text in READINGS.items()],
        validators=[DataRequired("Choose your reading.")],
    )
    status = RadioField(
        "Status",
        choices=[SelectChoice(key, text) for key, text in STATUSES.items()],
        validators=[DataRequired("Choose whether the review is preliminary or final.")],
    )
    comment = TextAreaField("Comment", validators=[Optional(), Length(max=MAX_COMMENT)])
    submit = SubmitField("Save review")

    def validate(self, extra_validators=None) -> bool:
        """The fields' own checks, then the rules of a review as a whole (`review_problem`), reported at the
        comment. Not an inline `validate_comment`: `Optional` stops a blank comment's checks before it."""
        if not super().validate(extra_validators):
            return False
        problem = review_problem(self.reading.data, self.status.data, self.comment.data)
        if problem:
            self.comment.errors = [*self.comment.errors, problem]
            return False
        return True


class FilterForm(Form):
    """A filter read from GET parameters, with an inclusive UTC date range (YYYY-MM-DD)."""

    date_from = DateField("From", validators=[Optional()])
    date_to = DateField("To", validators=[Optional()])

    def validate_date_to(self, field: DateField) -> None:
        if field.data and self.date_from.data and field.data < self.date_from.data:
            raise ValidationError("The end date is before the start date.")

    def error_text(self) -> str:
        return " ".join(f"{self[name].label.text}: {' '.join(errors)}" for name, errors in self.errors.items())

    def active(self) -> dict[str, str]:
        """The filters in effect, as query parameters (for pagination and export links); a field at its
        default (the usual order) is left out, as it narrows nothing."""
        values = {}
        for field in self:
            value = field.data
            value = value.isoformat() if isinstance(value, date) else (value or "").strip()
            if value and value != field.default:
                values[field.name] = value
        return values


class MonitoringFilter(FilterForm):
    """GET parameters of the monitoring page and API: the UTC days of the predictions counted."""


# The worklist's orders: `triage` (the default) puts urgent films first, then the unreviewed ones, COVID-19
# calls before indeterminate ones before the rest, newest first; `probability` is the ensemble's p(covid), so
# `-probability` puts the films most likely to be COVID first.
SORTS = {
    "triage": "Triage: urgent, then unreviewed COVID-19 calls first",
    "-date": "Newest first",
    "date": "Oldest first",
    "-probability": "Likeliest COVID first",
    "probability": "Least likely COVID first",
}
REVIEWED = {"no": "Not yet reviewed", "yes": "Reviewed"}


class HistoryFilter(FilterForm):
    """GET parameters: `decision`, `class`, `date_from`, `date_to`, `q` (reference), `reviewed` (yes|no),
    `reviewer` (a username) and `sort` (see `SORTS`; `triage` by default)."""

    decision = SelectField("Decision", choices=[], validate_choice=False)
    predicted = SelectField("Class", choices=[], validate_choice=False, name="class")
    q = StringField("Reference contains", validators=[Optional(), Length(max=128)])
    reviewed = SelectField(
        "Review",
        choices=[SelectChoice("", "Reviewed or not")] + [SelectChoice(k, v) for k, v in REVIEWED.items()],
        validators=[known(list(REVIEWED), "review state")],
        validate_choice=False,
    )
    reviewer = StringField("Reviewed by", validators=[Optional(), Length(max=64)])
    sort = SelectField(
        "Order",
        default="triage",
        choices=[SelectChoice(k, v) for k, v in SORTS.items()],
        validators=[known(list(SORTS), "order")],
        validate_choice=False,
    )

    def __init__(self, formdata, classes: list[str]) -> None:
        super().__init__(formdata)
        self.classes = classes
        self.reviewer_id: int | None = None  # set by validation
        self.predicted.choices = [SelectChoice("", "All classes")] + [SelectChoice(c, class_label(c)) for c in classes]
        self.decisions = [*classes, INDETERMINATE]
        self.decision.choices = [SelectChoice("", "All decisions")] + [
            SelectChoice(d, f"{decision_label(d)} ({d})") for d in self.decisions
        ]

    def validate_decision(self, field: SelectField) -> None:
        known(self.decisions, "decision")(self, field)

    def validate_predicted(self, field: SelectField) -> None:
        known(self.classes, "class")(self, field)

    def validate_reviewer(self, field: StringField) -> None:
        """A reviewer must be an account (disabled ones too: their reviews stay); its id is kept for the query."""
        name = (field.data or "").strip()
        if name:
            user = find_user(name)
            if user is None:
                raise ValidationError(f"Unknown reviewer '{name}'.")
            self.reviewer_id = user.id
