"""Command-line tools: `flask --app app init-db`, `predict FILE...`, `create-user NAME`, `create-token NAME` and
`export-reviewed --out DIR`."""

from __future__ import annotations

import csv
import json
import os
import shutil
from datetime import date, datetime
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from sqlalchemy import Select, func, select

from cxr.errors import InputError
from webapp import audit
from webapp.accounts import AccountError, create_user, find_user, issue_token
from webapp.analysis import analyse, build_record
from webapp.db import ROLES, Prediction, Review, db, within_dates
from webapp.pacs.cli import COMMANDS as PACS_COMMANDS
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


# What `python -m training.train --data DIR/manifest.csv` and `training.evaluate` read (training/data.py).
EXPORT_COLUMNS = ["file", "label", "patient_id", "source"]
EXPORT_SOURCE = "local"


@click.command("export-reviewed")
@with_appcontext
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

    The label is the class of each prediction's latest review; patient_id is its reference, or
    `prediction:<id>` for a film without one (each such film then counts as its own patient)."""
    if out.exists() and any(out.iterdir()) and not force:
        raise click.ClickException(f"{out} is not empty; choose an empty folder or pass --force to write into it.")
    reviewed = select_reviewed(since.date() if since else None)
    folder = Path(current_app.config["UPLOAD_FOLDER"])
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows, missing = [], 0
    for record in db.session.scalars(reviewed):
        source = folder / record.image_path
        if not source.is_file():
            missing += 1
            continue
        name = f"images/{record.id}{source.suffix}"
        shutil.copyfile(source, out / name)
        rows.append(
            [name, record.latest_review.correct_class, record.reference or f"prediction:{record.id}", EXPORT_SOURCE]
        )
    with (out / "manifest.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(EXPORT_COLUMNS)
        writer.writerows(rows)
    audit.record(
        audit.EXPORT,
        target="export-reviewed",
        detail=f"{len(rows)} reviewed films{f' since {since:%Y-%m-%d}' if since else ''}, on the command line",
    )
    db.session.commit()
    click.echo(f"Wrote {len(rows)} reviewed film(s) and {out / 'manifest.csv'}.")
    if missing:
        click.echo(f"Left out {missing} reviewed prediction(s) whose stored film is missing.", err=True)


def select_reviewed(since: date | None) -> Select:
    """Reviewed predictions, oldest first, narrowed to those whose latest review is from `since` on."""
    query = select(Prediction).where(Prediction.reviews.any()).order_by(Prediction.id)
    if since is not None:
        latest = select(func.max(Review.updated_at)).where(Review.prediction_id == Prediction.id).scalar_subquery()
        query = within_dates(query, latest, since, None)
    return query


def init_app(app: Flask) -> None:
    for command in (
        init_db_command,
        predict_command,
        create_user_command,
        create_token_command,
        export_reviewed_command,
        *PACS_COMMANDS,
    ):
        app.cli.add_command(command)
