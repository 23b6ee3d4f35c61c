"""Flask-WTF forms of the accounts feature: sign-in, password change, API tokens, user management and
the audit-log filters, and the site check. Every form that changes something carries a CSRF token."""

from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileRequired
from wtforms import MultipleFileField, PasswordField, SelectChoice, SelectField, StringField, SubmitField
from wtforms.validators import DataRequired, EqualTo, Length, Optional, ValidationError

from webapp.accounts import MIN_PASSWORD_LENGTH
from webapp.audit import ACTIONS
from webapp.db import ROLES
from webapp.forms import ACCEPT, FilterForm, known


class SignInForm(FlaskForm):
    username = StringField(
        "User name",
        validators=[DataRequired("Enter your user name."), Length(max=64)],
        render_kw={"autocomplete": "username", "autofocus": True},
    )
    password = PasswordField(
        "Password",
        validators=[DataRequired("Enter your password."), Length(max=256)],
        render_kw={"autocomplete": "current-password"},
    )
    submit = SubmitField("Sign in")


class PasswordChangeForm(FlaskForm):
    current = PasswordField(
        "Current password",
        validators=[DataRequired("Enter your current password.")],
        render_kw={"autocomplete": "current-password"},
    )
    new = PasswordField(
        f"New password (at least {MIN_PASSWORD_LENGTH} characters)",
        validators=[DataRequired("Enter a new password."), Length(min=MIN_PASSWORD_LENGTH, max=256)],
        render_kw={"autocomplete": "new-password"},
    )
    repeat = PasswordField(
        "New password again",
        validators=[EqualTo("new", "The two new passwords differ.")],
        render_kw={"autocomplete": "new-password"},
    )
    submit = SubmitField("Change password")

    def validate_new(self, field: PasswordField) -> None:
        if field.data and field.data == self.current.data:
            raise ValidationError("Choose a password that differs from the current one.")


class TokenForm(FlaskForm):
    label = StringField(
        "What the token is for", validators=[DataRequired("Say what the token is for."), Length(max=64)]
    )
    submit = SubmitField("Create token")


class NewUserForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired("Enter a user name."), Length(max=64)])
    role = SelectField("Role", choices=[SelectChoice(role) for role in ROLES])
    submit = SubmitField("Add user")


class AuditFilter(FilterForm):
    """GET parameters of the audit log page."""

    user = StringField("User", validators=[Optional(), Length(max=64)])
    # No `action=` in the query (the navigation's link, the pages' links) means all actions.
    action = SelectField(
        "Action",
        choices=[SelectChoice("", "All actions")] + [SelectChoice(a) for a in ACTIONS],
        validators=[known(list(ACTIONS), "action")],
        validate_choice=False,
    )
    address = StringField("Address", validators=[Optional(), Length(max=64)])


class SiteCheckForm(FlaskForm):
    files = MultipleFileField(
        "Known-negative chest X-rays from this hospital (PNG, JPEG, TIFF or DICOM)",
        validators=[FileRequired("Choose at least one film.")],
        render_kw={"accept": ACCEPT},
    )
    label = StringField(
        "What these films are",
        validators=[DataRequired("Say what these films are, e.g. 'Room 2 DR, 2019 normals'."), Length(max=128)],
    )
    submit = SubmitField("Run the site check")
