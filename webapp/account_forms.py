"""Flask-WTF forms of the accounts feature: sign-in, password change, API tokens, user management and
the audit-log filters. Every form that changes something carries a CSRF token."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import Form, PasswordField, SelectChoice, SelectField, StringField, SubmitField
from wtforms.fields import DateField
from wtforms.validators import DataRequired, EqualTo, Length, Optional, ValidationError

from webapp.audit import ACTIONS
from webapp.auth import MIN_PASSWORD_LENGTH
from webapp.db import ROLES


class SignInForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired("Enter your user name."), Length(max=64)],
                           render_kw={"autocomplete": "username", "autofocus": True})
    password = PasswordField("Password", validators=[DataRequired("Enter your password."), Length(max=256)],
                             render_kw={"autocomplete": "current-password"})
    submit = SubmitField("Sign in")


class PasswordChangeForm(FlaskForm):
    current = PasswordField("Current password", validators=[DataRequired("Enter your current password.")],
                            render_kw={"autocomplete": "current-password"})
    new = PasswordField(
        f"New password (at least {MIN_PASSWORD_LENGTH} characters)",
        validators=[DataRequired("Enter a new password."), Length(min=MIN_PASSWORD_LENGTH, max=256)],
        render_kw={"autocomplete": "new-password"},
    )
    repeat = PasswordField("New password again", validators=[EqualTo("new", "The two new passwords differ.")],
                           render_kw={"autocomplete": "new-password"})
    submit = SubmitField("Change password")

    def validate_new(self, field: PasswordField) -> None:
        if field.data and field.data == self.current.data:
            raise ValidationError("Choose a password that differs from the current one.")


class TokenForm(FlaskForm):
    label = StringField("What the token is for", validators=[DataRequired("Say what the token is for."),
                                                             Length(max=64)])
    submit = SubmitField("Create token")


class NewUserForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired("Enter a user name."), Length(max=64)])
    role = SelectField("Role", choices=[SelectChoice(role) for role in ROLES])
    submit = SubmitField("Add user")


class AuditFilter(Form):
    """GET parameters of the audit log page."""

    user = StringField("User", validators=[Optional(), Length(max=64)])
    # No `action=` in the query (the navigation's link, the pages' links) means all actions.
    action = SelectField("Action", choices=[SelectChoice("", "All actions")] + [SelectChoice(a) for a in ACTIONS],
                         validate_choice=False)
    address = StringField("Address", validators=[Optional(), Length(max=64)])
    date_from = DateField("From", validators=[Optional()])
    date_to = DateField("To", validators=[Optional()])

    def validate_action(self, field: SelectField) -> None:
        if field.data and field.data not in ACTIONS:
            raise ValidationError(f"Unknown action '{field.data}'.")

    def validate_date_to(self, field: DateField) -> None:
        if field.data and self.date_from.data and field.data < self.date_from.data:
            raise ValidationError("The end date is before the start date.")

    def active(self) -> dict[str, str]:
        values = {
            "user": (self.user.data or "").strip(),
            "action": self.action.data or "",
            "address": (self.address.data or "").strip(),
            "date_from": self.date_from.data.isoformat() if self.date_from.data else "",
            "date_to": self.date_to.data.isoformat() if self.date_to.data else "",
        }
        return {key: value for key, value in values.items() if value}
