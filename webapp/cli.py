"""Command-line tools: `flask --app app init-db`, `predict FILE...`, `create-user NAME`, `create-token NAME`,
`export-reviewed --out DIR` and `site-check DIR`."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from cxr.errors import InputError
from webapp import audit, site_check
from webapp.accounts import AccountError, create_user, find_user, issue_token
from webapp.analysis import analyse, build_record
from webapp.db import (
    DATABASE_ERRORS,
    ROLES,
    db,
    describe_database_error,
    schema_problem,
)
from webapp.export import export_reviewed
from webapp.model_service import model_service
from webapp.pacs.cli import COMMANDS as PACS_COMMANDS
from webapp.serialize import prediction_json
from webapp.startup import prepare_database


class DatabaseNotReady(click.ClickException):
    """The command needs a database with the current schema; exit status 2, the message says what to do."""

    exit_code = 2


def needs_schema(command: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command that reads or writes the database only once its schema is the current one: on an instance
    before `init-db` (or after a code update) it says so and exits 2, instead of a SQLAlchemy traceback.
    Apply it under `@with_appcontext`."""

    @functools.wraps(command)
    def checked(*args: Any, **kwargs: Any) -> Any:
        try:
            problem = schema_problem()
        except DATABASE_ERRORS as exc:
            raise DatabaseNotReady(f"The database does not answer ({describe_database_error(exc)}).") from exc
        if problem:
            raise DatabaseNotReady(problem)
        return command(*args, **kwargs)

    return checked


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
@needs_schema
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
@needs_schema
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


@click.command("export-reviewed")
@with_appcontext
@needs_schema
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="folder to write the films and manifest.csv into",
)
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="only predictions whose latest review was saved on or after this UTC day (YYYY-MM-DD)",
)
@click.option(
    "--force", is_flag=True, help="write into a folder that is not empty (files of the same name are replaced)"
)
def export_reviewed_command(out: Path, since: datetime | None, force: bool) -> None:
    """Write the reviewed films and OUT/manifest.csv (file,label,patient_id,source) for training and evaluation.

    Each film (sha256) is written once. Its label comes from the reading of its latest review (typical:
    covid, negative: normal, atypical or another finding: other, which training takes as non-COVID); films
    whose latest reading is preliminary or indeterminate are left out and counted. patient_id is its
    reference, or `prediction:<id>` for a film without one (each such film then counts as its own patient);
    references that share a film are one patient (webapp/export.py)."""
    if out.exists() and any(out.iterdir()) and not force:
        raise click.ClickException(f"{out} is not empty; choose an empty folder or pass --force to write into it.")
    if (out / "images").is_symlink():
        raise click.ClickException(f"{out / 'images'} is a symbolic link; export into a folder without one.")
    summary = export_reviewed(out, Path(current_app.config["UPLOAD_FOLDER"]), since.date() if since else None)
    audit.record(
        audit.EXPORT,
        target="export-reviewed",
        detail=f"{summary.films} reviewed films{f' since {since:%Y-%m-%d}' if since else ''}, on the command line",
    )
    db.session.commit()
    click.echo(f"Wrote {summary.films} reviewed film(s) and {out / 'manifest.csv'}.")
    if summary.repeated:
        click.echo(
            f"{len(summary.repeated)} film(s) were uploaded more than once: each is written once, as one patient, "
            "labelled by its latest review.",
            err=True,
        )
    for film in summary.disagreeing:
        ids = ", ".join(str(p.id) for p in film.predictions)
        click.echo(
            f"  The reviews of predictions {ids} (the same film) disagree; exported as '{film.label}'.", err=True
        )
    if summary.missing:
        click.echo(f"Left out {summary.missing} reviewed film(s) whose stored file is missing.", err=True)
    if summary.unlabelled:
        click.echo(
            f"Left out {summary.unlabelled} reviewed film(s) whose latest reading is preliminary or indeterminate.",
            err=True,
        )


@click.command("site-check")
@with_appcontext
@needs_schema
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--label", default="", help="what the films are, e.g. 'CT room 2, 2019 normals' (default: FOLDER)")
def site_check_command(folder: Path, label: str) -> None:
    """Run FOLDER's known-negative films through the model and compare their rates with the cross-validation
    estimate; the result is stored and audited (the films are not), and shown on the monitoring page."""
    paths = list(site_check.files_in(folder))
    if not paths:
        raise click.ClickException(f"{folder} holds no files.")
    row = site_check.run_site_check(((p.name, site_check.read_limited(p)) for p in paths), label or str(folder))
    for line in site_check.report_lines(row, model_service.bundle.card):
        click.echo(line)


def init_app(app: Flask) -> None:
    for command in (
        init_db_command,
        predict_command,
        create_user_command,
        create_token_command,
        export_reviewed_command,
        site_check_command,
        *PACS_COMMANDS,
    ):
        app.cli.add_command(command)
