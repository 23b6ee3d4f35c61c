"""Flask-WTF forms: the upload and review forms (CSRF-protected), the API upload fields, the base of
every filter form (GET parameters), and the history filters shared by the history page, its CSV export
and the JSON API."""

from __future__ import annotations

from datetime import date

from flask import current_app
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired, MultipleFileField
from wtforms import Form, RadioField, SelectChoice, SelectField, StringField, SubmitField, TextAreaField
from wtforms.fields import DateField
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from cxr.decision import INDETERMINATE
from webapp.accounts import find_user
from webapp.reviews import MAX_COMMENT, review_problem

ACCEPT = ".png,.jpg,.jpeg,.tif,.tiff,.dcm,.dicom,image/png,image/jpeg,image/tiff,application/dicom"


def known(values: list[str], what: str):
    """A validator: the field is empty or one of `values` (read when validating, so it may be set later)."""

    def check(form: Form, field) -> None:
        if field.data and field.data not in values:
            raise ValidationError(f"Unknown {what} '{field.data}'.")

    return check


class DetailsMixin:
    reference = StringField("Patient or study reference", validators=[Optional(), Length(max=128)])
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

    reference = StringField("Reference", validators=[DataRequired("Choose the reference."), Length(max=128)])


class ReviewForm(FlaskForm):
    verdict = RadioField(
        "Your reading",
        choices=[SelectChoice("agree", "Agree with the prediction"), SelectChoice("disagree", "Disagree")],
        validators=[DataRequired("Choose agree or disagree.")],
    )
    correct_class = SelectField("Correct class (when you disagree)", choices=[], validate_choice=False)
    comment = TextAreaField("Comment", validators=[Optional(), Length(max=MAX_COMMENT)])
    submit = SubmitField("Save review")

    def __init__(self, classes: list[str], predicted: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.classes = classes
        self.predicted_class = predicted
        self.correct_class.choices = [SelectChoice("", "—")] + [SelectChoice(c) for c in classes]

    def validate_correct_class(self, field: SelectField) -> None:
        if self.verdict.data not in ("agree", "disagree"):
            return  # the verdict's own error says what is missing
        agrees = self.verdict.data == "agree"
        # Agreeing leaves the class as the prediction's, whatever the select still shows.
        problem = review_problem(self.classes, self.predicted_class, agrees, None if agrees else field.data)
        if problem:
            raise ValidationError(problem)


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


# The worklist's orders: `probability` is the ensemble's p(covid), so `-probability` puts the films most
# likely to be COVID first.
SORTS = {
    "-date": "Newest first",
    "date": "Oldest first",
    "-probability": "Likeliest COVID first",
    "probability": "Least likely COVID first",
}
REVIEWED = {"no": "Not yet reviewed", "yes": "Reviewed"}


class HistoryFilter(FilterForm):
    """GET parameters: `decision`, `class`, `date_from`, `date_to`, `q` (reference), `reviewed` (yes|no),
    `reviewer` (a username) and `sort` (see `SORTS`)."""

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
        default="-date",
        choices=[SelectChoice(k, v) for k, v in SORTS.items()],
        validators=[known(list(SORTS), "order")],
        validate_choice=False,
    )

    def __init__(self, formdata, classes: list[str]) -> None:
        super().__init__(formdata)
        self.classes = classes
        self.reviewer_id: int | None = None  # set by validation
        self.predicted.choices = [SelectChoice("", "All classes")] + [SelectChoice(c) for c in classes]
        self.decisions = [*classes, INDETERMINATE]
        self.decision.choices = [SelectChoice("", "All decisions")] + [SelectChoice(d) for d in self.decisions]

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
