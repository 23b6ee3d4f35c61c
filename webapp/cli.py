"""Command-line tools: `flask --app app init-db` and `flask --app app predict FILE...`."""

from __future__ import annotations

import json
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from cxr.errors import InputError
from webapp.db import upgrade_schema
from webapp.predictions import analyse, build_record
from webapp.serialize import prediction_json


@click.command("init-db")
@with_appcontext
def init_db_command() -> None:
    """Create the database schema, or upgrade it to the newest migration."""
    upgrade_schema(current_app)
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


def init_app(app: Flask) -> None:
    app.cli.add_command(init_db_command)
    app.cli.add_command(predict_command)
