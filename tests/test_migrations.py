"""Every Alembic migration, on SQLite and on PostgreSQL: one at a time from an empty database up to the
newest and back down to empty, and an upgrade to the newest from a database holding rows at each earlier
revision keeps every row of every table (predictions, reviews, their edit history, users, tokens, sessions,
the audit trail). The revisions are read from migrations/versions, whatever they are: a new migration is
tested by adding it."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import flask_migrate
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from webapp.db import MIGRATIONS, db

pytestmark = pytest.mark.databases("sqlite", "postgres")

SCRIPTS = ScriptDirectory(str(MIGRATIONS))
REVISIONS = [script.revision for script in reversed(list(SCRIPTS.walk_revisions()))]  # oldest first
ROWS_PER_TABLE = 2


def current_revision() -> str | None:
    with db.engine.connect() as connection:
        return connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def tables() -> set[str]:
    return set(sa.inspect(db.engine).get_table_names()) - {"alembic_version"}


def test_the_revisions_form_one_line():
    assert len(SCRIPTS.get_heads()) == 1, f"several heads: {SCRIPTS.get_heads()}; chain the new migration"
    assert len(REVISIONS) == len({*REVISIONS}) and SCRIPTS.get_base() == REVISIONS[0]


def test_every_migration_upgrades_from_empty_and_downgrades_to_empty(make_app, empty_database_url):
    app = make_app(SQLALCHEMY_DATABASE_URI=empty_database_url)
    with app.app_context():
        seen = []
        for revision in REVISIONS:
            flask_migrate.upgrade(directory=str(MIGRATIONS), revision=revision)
            assert current_revision() == revision
            seen.append(tables())
        with db.engine.connect() as connection:  # the newest schema is the models', column types included
            # except on SQLite, which names a Float column of a migration FLOAT where the model says DOUBLE:
            # the same storage there.
            options = {"compare_type": connection.dialect.name != "sqlite"}
            assert compare_metadata(MigrationContext.configure(connection, opts=options), db.metadata) == []
        for revision, before in zip(reversed(REVISIONS), reversed([set(), *seen[:-1]])):
            down = SCRIPTS.get_revision(revision).down_revision
            flask_migrate.downgrade(directory=str(MIGRATIONS), revision=down or "base")
            assert tables() == before, f"downgrading {revision}"
            assert current_revision() == down
        db.engine.dispose()


def sample_value(column: sa.Column, n: int) -> Any:
    """Row `n`'s value for a column of any table: its id, the id of row `n` of the table it refers to, or
    a distinct value of its type (a JSON object of class probabilities, as the predictions hold)."""
    kind = column.type
    if column.primary_key or column.foreign_keys:
        return n
    if isinstance(kind, sa.Boolean):
        return n % 2 == 0
    if isinstance(kind, sa.Integer):
        return 10 + n
    if isinstance(kind, sa.Float | sa.Numeric):
        return 0.25 + n / 8
    if isinstance(kind, sa.DateTime):
        return datetime(2026, 1, n, 8, 30, n)
    if isinstance(kind, sa.Date):
        return date(2026, 1, n)
    if isinstance(kind, sa.JSON):
        return {"covid": 0.25 * n, "normal": 1 - 0.25 * n}
    if isinstance(kind, sa.String):  # Text too
        return f"{column.name}-{n}"[: kind.length or None]
    raise AssertionError(f"no sample value for {column.table.name}.{column.name} ({kind!r}): add one here")


def fill_every_table() -> dict[str, list[dict[str, Any]]]:
    """ROWS_PER_TABLE rows in every table of the current schema, parents first; returns them by table."""
    metadata = sa.MetaData()
    metadata.reflect(bind=db.engine)
    written = {}
    with db.engine.begin() as connection:
        for table in metadata.sorted_tables:
            if table.name == "alembic_version":
                continue
            written[table.name] = [
                {column.name: sample_value(column, n) for column in table.columns} for n in range(1, ROWS_PER_TABLE + 1)
            ]
            connection.execute(table.insert(), written[table.name])
    return written


def rows_by_id(table_name: str) -> dict[Any, dict[str, Any]]:
    table = sa.Table(table_name, sa.MetaData(), autoload_with=db.engine)
    with db.engine.connect() as connection:
        return {row.id: row._asdict() for row in connection.execute(sa.select(table))}


# What a migration rewrites on purpose, from the revision that does it: i23a drops agree/correct_class for the
# reading and puts an earlier review's class in front of its comment (tests/test_worklist.py checks how).
REWRITTEN = {
    "i23a_readings_and_reasons": {
        "reviews": {"agrees", "correct_class", "comment"},
        "review_edits": {"agrees", "correct_class", "comment"},
    }
}


def rewritten_after(revision: str, table_name: str) -> set[str]:
    """The columns of `table_name` that a migration after `revision` rewrites on purpose."""
    later = REVISIONS[REVISIONS.index(revision) + 1 :]
    return {column for name in later for column in REWRITTEN.get(name, {}).get(table_name, set())}


@pytest.mark.parametrize("revision", REVISIONS[:-1])
def test_upgrading_a_database_with_rows_keeps_every_row(make_app, empty_database_url, revision):
    """Rows written at `revision` are all there, with the same values, at the newest (SQLite's batch mode
    copies tables; a copy that cascaded to the rows referring to it once deleted every review)."""
    app = make_app(SQLALCHEMY_DATABASE_URI=empty_database_url)
    with app.app_context():
        flask_migrate.upgrade(directory=str(MIGRATIONS), revision=revision)
        written = fill_every_table()
        flask_migrate.upgrade(directory=str(MIGRATIONS))
        assert current_revision() == REVISIONS[-1]
        for table_name, rows in written.items():
            kept = rows_by_id(table_name)
            assert sorted(kept) == [row["id"] for row in rows], f"{table_name}: rows lost or added"
            compared = set(rows[0]) - rewritten_after(revision, table_name)
            for row in rows:
                expected = {name: row[name] for name in compared}
                assert {name: kept[row["id"]][name] for name in compared} == expected, f"{table_name} #{row['id']}"
        db.engine.dispose()


def test_downgrading_past_the_stored_heatmap_gives_its_rows_an_empty_overlay_path(make_app, empty_database_url):
    """i22b: rows stored with a heatmap have no overlay file; the older schema's NOT NULL overlay_path gets ''
    for them (which the older check-storage reports), and the other rows keep theirs."""
    app = make_app(SQLALCHEMY_DATABASE_URI=empty_database_url)
    with app.app_context():
        flask_migrate.upgrade(directory=str(MIGRATIONS), revision="i22b_small_heatmap")
        written = fill_every_table()["predictions"]
        with db.engine.begin() as connection:
            connection.execute(sa.text("UPDATE predictions SET overlay_path = NULL WHERE id = 1"))
        flask_migrate.downgrade(
            directory=str(MIGRATIONS), revision=SCRIPTS.get_revision("i22b_small_heatmap").down_revision
        )
        kept = rows_by_id("predictions")
        assert kept[1]["overlay_path"] == "" and kept[2]["overlay_path"] == written[1]["overlay_path"]
        assert "heatmap_path" not in kept[1] and len(kept) == 2
        db.engine.dispose()
