"""Database models (Flask-SQLAlchemy), SQLite tuning, and schema upgrades through Alembic migrations."""

from __future__ import annotations

import fcntl
from datetime import UTC, date, datetime, time
from pathlib import Path

import flask_migrate
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from flask_login import UserMixin
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import (
    JSON,
    Date,
    DateTime,
    ForeignKey,
    Index,
    MetaData,
    Select,
    String,
    Text,
    UniqueConstraint,
    event,
    func,
    select,
    text,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy import false as sa_false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from webapp.readings import agrees_with_model

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
# What a database that does not answer raises: answered 503 (webapp/errors.py), never a 500.
DATABASE_ERRORS = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError, sa_exc.DisconnectionError)


class Base(DeclarativeBase):
    # Named constraints let Alembic's batch mode alter SQLite tables in later migrations.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


# A session lasts one request (or one CLI command), so its objects need not be read again after a commit:
# with SQLAlchemy's default, every upload and every viewed prediction read its row back right after
# committing it, one more query on each (tests/test_api.py checks that an upload reads nothing back).
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
migrate = Migrate()


def utcnow() -> datetime:
    """Naive UTC, as every timestamp is stored (SQLite keeps no time zone)."""
    return datetime.now(UTC).replace(tzinfo=None)


def within_dates(query: Select, column, date_from: date | None, date_to: date | None) -> Select:
    """`query` narrowed to rows whose `column` falls on the given UTC days, both ends inclusive."""
    if date_from:
        query = query.where(column >= datetime.combine(date_from, time.min))
    if date_to:  # time.max: the whole last day, and no day after 9999-12-31 to overflow into
        query = query.where(column <= datetime.combine(date_to, time.max))
    return query


UPLOAD_ORIGIN = "upload"
PORTABLE_VIEW = "AP"  # portable (bedside) films: where COVID-19 models err most


class Prediction(db.Model):
    __tablename__ = "predictions"
    __table_args__ = (
        # One stored upload per user and Idempotency-Key: a client's retry returns the first (webapp/views/api.py).
        Index("ix_predictions_user_id_idempotency_key", "user_id", "idempotency_key", unique=True),
        # A PACS instance is analysed once, however often it is sent or its job retried: the second row is
        # refused here (uploads may repeat an instance, e.g. a clinician uploading the exported file).
        Index(
            "uq_predictions_pacs_instance",
            "sop_instance_uid",
            unique=True,
            sqlite_where=text("origin != 'upload'"),
            postgresql_where=text("origin != 'upload'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    filename: Mapped[str] = mapped_column(String(255))  # as the client sent it; display text only
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    # Generated paths relative to UPLOAD_FOLDER; never derived from user input.
    image_path: Mapped[str] = mapped_column(String(255))
    # The Grad-CAM heatmap (cxr.overlay.heatmap_png), from which the overlay is rendered when asked for;
    # NULL for rows stored before it, which have their overlay JPEG (or PNG) instead: `overlay_path`, NULL
    # for newer rows. Every row has one of the two.
    heatmap_path: Mapped[str | None] = mapped_column(String(255))
    overlay_path: Mapped[str | None] = mapped_column(String(255))
    thumbnail_path: Mapped[str] = mapped_column(String(255))
    # A grayscale DICOM's full bit depth as a 16-bit PNG (cxr.overlay.depth_png), which the viewer windows;
    # NULL for other uploads. `depth_window` is the DICOM's own {"center", "width"} in its units, or NULL.
    depth_path: Mapped[str | None] = mapped_column(String(255))
    depth_window: Mapped[dict[str, float] | None] = mapped_column(JSON)
    label: Mapped[str] = mapped_column(String(64), index=True)  # the class the threshold rule gives
    # What is reported: the label, or "indeterminate" where the model's rule withholds it (cxr.decision.Rule).
    decision: Mapped[str] = mapped_column(String(64), index=True)
    # Why an indeterminate decision is so (cxr.decision.NEAR_THRESHOLD / UNLIKE_TRAINING); [] for other
    # decisions, NULL for predictions stored before it was recorded.
    indeterminate_reasons: Mapped[list[str] | None] = mapped_column(JSON)
    probabilities: Mapped[dict[str, float]] = mapped_column(JSON)  # the ensemble's
    # The ensemble's p(covid), copied out of `probabilities` so that the worklist can sort on it in SQL
    # (JSON extraction differs between SQLite and PostgreSQL); NULL for a model without that class.
    positive_probability: Mapped[float | None] = mapped_column(index=True)
    cnn_probabilities: Mapped[dict[str, float]] = mapped_column(JSON)
    threshold: Mapped[float | None]
    model_version: Mapped[str] = mapped_column(String(64))
    elapsed_ms: Mapped[float]
    ood_score: Mapped[float]  # feature distance / its threshold; ≤ 1 resembles the training X-rays
    reference: Mapped[str | None] = mapped_column(String(128), index=True)
    note: Mapped[str | None] = mapped_column(Text)
    # The worklist: a clinician may flag a film urgent (it goes first), and claim it while reading it so that
    # nobody else reads it meanwhile (webapp/triage.py); a claim lapses after CLAIM_MINUTES.
    urgent: Mapped[bool] = mapped_column(default=False, server_default=sa_false(), index=True)
    claimed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime)
    claimed_by: Mapped[User | None] = relationship(foreign_keys=[claimed_by_id], lazy="joined")
    # Study metadata (cxr.imaging.STUDY_FIELDS) from a DICOM header, or typed at upload (view, study date).
    study_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    series_instance_uid: Mapped[str | None] = mapped_column(String(64))
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    accession_number: Mapped[str | None] = mapped_column(String(16))
    view_position: Mapped[str | None] = mapped_column(String(16))
    laterality: Mapped[str | None] = mapped_column(String(1))
    modality: Mapped[str | None] = mapped_column(String(16))
    study_date: Mapped[date | None] = mapped_column(Date, index=True)
    # "upload", or where a PACS instance came from: the calling AE title (C-STORE) or "DICOMweb" (pull).
    origin: Mapped[str] = mapped_column(String(64), default=UPLOAD_ORIGIN, server_default=UPLOAD_ORIGIN)
    # When the SR and the secondary capture reached the PACS (webapp.pacs.results); NULL until then.
    results_sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Who uploaded it; NULL for rows from before accounts existed. Users are disabled, never deleted.
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(128))  # the API client's, when it sent one
    user: Mapped[User | None] = relationship(foreign_keys=[user_id], lazy="joined")
    reviews: Mapped[list[Review]] = relationship(
        back_populates="prediction",
        cascade="all, delete-orphan",
        order_by="[Review.updated_at.desc(), Review.id.desc()]",
        lazy="selectin",
    )

    # Never stored: what an uploaded DICOM's header offers as the reference, for the answer to that upload only.
    suggested_reference = None  # dict[str, str] | None; a plain attribute, unmapped

    @property
    def portable(self) -> bool:
        """An AP film: usually taken at the bedside, where COVID-19 models err most."""
        return self.view_position == PORTABLE_VIEW

    @property
    def latest_review(self) -> Review | None:
        """The most recently saved review of any clinician: its reading is the prediction's clinician label."""
        return self.reviews[0] if self.reviews else None

    @property
    def probability(self) -> float:
        """The ensemble's probability of the predicted class."""
        return self.probabilities[self.label]


class Review(db.Model):
    """One clinician's current reading of one prediction; its earlier versions are `ReviewEdit` rows.

    Rows from before accounts existed have no user, so the uniqueness leaves them (NULLs never collide)."""

    __tablename__ = "reviews"
    __table_args__ = (UniqueConstraint("prediction_id", "user_id", name="uq_reviews_prediction_id_user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    prediction_id: Mapped[int] = mapped_column(ForeignKey("predictions.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)  # the first version
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)  # this version
    reading: Mapped[str] = mapped_column(String(16))  # a key of webapp.readings.READINGS
    status: Mapped[str] = mapped_column(String(16))  # preliminary or final
    comment: Mapped[str | None] = mapped_column(Text)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    user: Mapped[User | None] = relationship(lazy="joined")
    prediction: Mapped[Prediction] = relationship(back_populates="reviews")
    edits: Mapped[list[ReviewEdit]] = relationship(
        back_populates="review", cascade="all, delete-orphan", order_by="ReviewEdit.saved_at.desc()", lazy="selectin"
    )

    @property
    def agrees(self) -> bool:
        """Whether the reading agrees with the model's decision (`webapp.readings.agrees_with_model`)."""
        return agrees_with_model(self.reading, self.prediction.decision)


class ReviewEdit(db.Model):
    """An earlier version of a review, copied when its clinician changed it."""

    __tablename__ = "review_edits"

    id: Mapped[int] = mapped_column(primary_key=True)
    review_id: Mapped[int] = mapped_column(ForeignKey("reviews.id", ondelete="CASCADE"), index=True)
    saved_at: Mapped[datetime] = mapped_column(DateTime)  # when this version was written
    reading: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str | None] = mapped_column(Text)
    review: Mapped[Review] = relationship(back_populates="edits")


ROLES = ("clinician", "admin")


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)  # stored lower-case
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(default=True)
    # A one-time password (first run, created or reset by an admin) must be replaced at the next sign-in.
    must_change_password: Mapped[bool] = mapped_column(default=False)
    # The session's user id: replaced when the password is reset or the account disabled, which
    # signs the user out of every browser at once.
    session_token: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_sign_in_at: Mapped[datetime | None] = mapped_column(DateTime)
    tokens: Mapped[list[ApiToken]] = relationship(
        back_populates="user", order_by="ApiToken.created_at.desc()", cascade="all, delete-orphan"
    )

    @property
    def is_active(self) -> bool:  # Flask-Login refuses inactive users at sign-in
        return self.active

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def get_id(self) -> str:
        return self.session_token


class UserSession(db.Model):
    """One signed-in browser. The cookie carries a random id whose SHA-256 is stored here, so that
    signing out ends the session on the server (a copy of the cookie is worthless afterwards) and a
    session ends at `expires_at` however active it is."""

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime)
    address: Mapped[str | None] = mapped_column(String(64))
    # A DICOM header's identifiers offered as the reference of this browser's uploads ({prediction id: {name:
    # value}}), until one is chosen: patient identifiers stay on the server, never in the (signed, readable)
    # cookie, and are dropped when the session ends.
    reference_offers: Mapped[dict[str, dict[str, str]] | None] = mapped_column(JSON)
    user: Mapped[User] = relationship(lazy="joined")


class ApiToken(db.Model):
    """A bearer token for the JSON API. Only its SHA-256 is stored; the token itself is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # the first characters, so that people can tell tokens apart
    label: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)
    user: Mapped[User] = relationship(back_populates="tokens")


class AuditEvent(db.Model):
    """Who did what, when, from which address. `username` is copied so that the entry outlives renames
    and records failed sign-ins with names that match no account."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_action_created_at", "action", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    username: Mapped[str | None] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)
    address: Mapped[str | None] = mapped_column(String(64), index=True)


class SiteCheck(db.Model):
    """A hospital's own known-negative films run through the model before go-live (`webapp.site_check`):
    only the counts and the p(covid) distribution are kept, never the films."""

    __tablename__ = "site_checks"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    username: Mapped[str | None] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64), index=True)
    films: Mapped[int]  # files given, whatever became of them
    refused: Mapped[int]  # refused by the out-of-distribution gate
    unreadable: Mapped[int]  # not decodable as an image
    covid: Mapped[int]
    indeterminate: Mapped[int]
    normal: Mapped[int]
    p_covid: Mapped[dict] = mapped_column(JSON)  # {"quantiles": {...}, "histogram": [...]} of the analysed films

    @property
    def analysed(self) -> int:
        return self.covid + self.indeterminate + self.normal


def init_app(app: Flask) -> None:
    db.init_app(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS), render_as_batch=True)
    with app.app_context():
        engine = db.engine
    if engine.dialect.name == "sqlite":
        busy_timeout = int(app.config["SQLITE_BUSY_TIMEOUT_MS"])

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            # WAL lets readers run beside one writer; the busy timeout makes concurrent writers
            # (several gunicorn workers) wait for the lock instead of failing at once.
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {busy_timeout}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.close()


def commit_in_turn(key: int) -> None:
    """Make the rows this transaction inserts from now on get ids in the order of the commits of every
    transaction that calls this with the same `key`, so that "ids up to mine" means "committed before me".

    SQLite does so by itself (one writer at a time, from its first write to its commit). A PostgreSQL
    sequence hands out ids before the commits, which may then land in any order: a transaction-scoped
    advisory lock, released at the commit, lets one such transaction at a time insert. Call it before
    the inserts, and before anything that flushes them."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(select(func.pg_advisory_xact_lock(key)))


def describe_database_error(exc: BaseException) -> str:
    """One line naming the driver's error, for the log."""
    orig = getattr(exc, "orig", None)
    return f"{type(orig or exc).__name__}: {orig or exc}".splitlines()[0][:300]


def upgrade_schema(app: Flask) -> None:
    """Create or upgrade the schema to the newest migration; a file lock serialises racing workers."""
    with open(Path(app.instance_path, "migrate.lock"), "w") as lock, app.app_context():
        fcntl.flock(lock, fcntl.LOCK_EX)
        flask_migrate.upgrade(directory=str(MIGRATIONS))


INIT_DB = "run `flask --app app init-db` first"


def schema_problem() -> str | None:
    """Why this app's database cannot serve this code yet (no schema, or one at another migration), else None.
    Needs an app context; raises one of DATABASE_ERRORS when the database does not answer."""
    with db.engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    newest = set(ScriptDirectory(str(MIGRATIONS)).get_heads())
    if not current:
        return f"The database has no schema: {INIT_DB}."
    if current != newest:
        return (
            f"The database schema is at migration {', '.join(sorted(current))}, this code needs "
            f"{', '.join(sorted(newest))}: {INIT_DB}."
        )
    return None
