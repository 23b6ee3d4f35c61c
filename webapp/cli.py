"""Command-line tools: `flask --app app init-db`, `predict FILE...`, `create-user NAME` and `create-token NAME`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from cxr.errors import InputError
from webapp import audit
from webapp.accounts import AccountError, create_user, find_user, issue_token
from webapp.analysis import analyse, build_record
from webapp.db import ROLES, db
from webapp.serialize import prediction_json
from webapp.startup import prepare_database


@click.command("init-db")
@with_appcontext
def init_db_command() -> None:
    """Create the database schema, or upgrade it to the newest migration; on an empty database, create the
    first administrator."""
    prepare_database(current_app)
    click.echo("The database schema is up to date.")


@click.command("predict")
@with_appcontext
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def predict_command(files: tuple[Path, ...]) -> None:
    """Print one JSON line per FILE, as the API answers (nothing is stored); exit 1 if any fails."""
    failed = False
    for path in files:
        try:
            result = prediction_json(build_record(analyse(path.read_bytes()), path.name))
        except InputError as exc:
            failed = True
            result = {"error": exc.message, "status": exc.status}
        click.echo(json.dumps({"file": str(path), **result}))
    if failed:
        raise SystemExit(1)


@click.command("create-user")
@with_appcontext
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default="clinician", show_default=True)
def create_user_command(name: str, role: str) -> None:
    """Add a user. The password is prompted for, or read from CXR_USER_PASSWORD (for automation)."""
    password = os.environ.get("CXR_USER_PASSWORD") or click.prompt(
        "Password", hide_input=True, confirmation_prompt=True
    )
    try:
        user = create_user(name, password, role)
    except AccountError as exc:
        raise click.ClickException(str(exc)) from exc
    audit.record(audit.USER_CREATED, target=f"user:{user.username}", detail=f"role {role}, on the command line")
    db.session.commit()
    click.echo(f"Created the {role} '{user.username}'.")


@click.command("create-token")
@with_appcontext
@click.argument("name")
@click.option("--label", default="command line", show_default=True, help="what the token is for")
def create_token_command(name: str, label: str) -> None:
    """Print a new API token for user NAME (shown only now; revoke it on the account page)."""
    user = find_user(name)
    if user is None or not user.active:
        raise click.ClickException(f"There is no active user '{name}'.")
    token, row = issue_token(user, label)
    audit.record(audit.TOKEN_CREATED, target=f"token:{row.id}", detail=f"{row.label}, on the command line", user=user)
    db.session.commit()
    click.echo(token)


def init_app(app: Flask) -> None:
    for command in (init_db_command, predict_command, create_user_command, create_token_command):
        app.cli.add_command(command)
