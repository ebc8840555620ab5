"""SQLAlchemy ORM tables of the serving database: users, their API keys, the prediction log.

The schema is owned by the Alembic migrations in ``serving/store/migrations``; these classes
must describe the same tables (``tests/serving/store/test_db.py`` checks that they do). A new
table is a new class here plus a new migration.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Deterministic constraint names, so later migrations (and SQLite batch mode) can address them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ROLES = ("predict", "admin")
"""Role names as stored; ``serving.access.principals.Role`` is the typed view."""


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (what every timestamp column stores)."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the backend stores.

    SQLite has no time zones and hands back naive datetimes; PostgreSQL returns aware ones.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def on_backend(backend: str) -> Callable[[Any, str | None, str, bool, Any], bool]:
    """Alembic's ``include_object`` for a database of ``backend`` (``"postgresql"``, ...): leaves
    out what exists only on other backends (``.ddl_if(dialect=...)``), so that autogenerate
    compares each database with what it really has (``migrations/env.py``, the tests)."""

    def include(item: Any, _name: str | None, _type: str, _reflected: bool, _other: Any) -> bool:
        only = getattr(item, "_ddl_if", None)  # set by SchemaItem.ddl_if()
        if only is None or only.dialect is None:
            return True
        return backend == only.dialect if isinstance(only.dialect, str) else backend in only.dialect

    return include


class Base(DeclarativeBase):
    """Declarative base of every serving table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    """Someone (or something) that can log in: a name, a bcrypt hash and one role."""

    __tablename__ = "users"
    # AUTOINCREMENT on SQLite: an id is never reused, so a deleted user's token cannot
    # come back to life as a newer user's.
    __table_args__ = (
        CheckConstraint("role IN ('predict', 'admin')", name="role"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    api_keys: Mapped[list[ApiKey]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )


class ApiKey(Base):
    """An API key of a user: found by its public prefix, checked against a SHA-256 of the secret."""

    __tablename__ = "api_keys"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(100), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    user: Mapped[User] = relationship(back_populates="api_keys")


class PredictionLog(Base):
    """One car priced by the API: who asked, which model answered, the features, the price, and
    later what the car really sold for (``actual_price``, set once by feedback).

    Written in batches by :mod:`serving.monitoring.prediction_log`; read by
    :mod:`serving.store.predictions`. ``(request_id, row)`` names a car for feedback.
    """

    __tablename__ = "prediction_log"
    __table_args__ = (
        UniqueConstraint("request_id", "row", name="uq_prediction_log_request_id_row"),
        # PostgreSQL: one BRIN index (rows arrive in time order); SQLite: the btree indexes of
        # migration 0002 (no BRIN there). See migration 0004.
        Index(
            "ix_prediction_log_logged_at",
            "logged_at",
            postgresql_using="brin",
            postgresql_with={"autosummarize": "on"},
        ),
        Index("ix_prediction_log_model_version_logged_at", "model_version", "logged_at").ddl_if(
            dialect="sqlite"
        ),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True
    )
    # Bytewise ("C") on PostgreSQL: ids are ASCII; SQLite compares text bytewise already.
    request_id: Mapped[str] = mapped_column(
        String(128).with_variant(String(128, collation="C"), "postgresql")
    )
    row: Mapped[int] = mapped_column(Integer)
    logged_at: Mapped[datetime] = mapped_column(UTCDateTime())
    api_version: Mapped[str] = mapped_column(String(8))
    model_name: Mapped[str] = mapped_column(String(255))
    model_version: Mapped[str] = mapped_column(String(64))
    caller: Mapped[str] = mapped_column(String(128))
    cached: Mapped[bool] = mapped_column(Boolean)
    price: Mapped[float] = mapped_column(Float)
    brand: Mapped[str | None] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(64))
    fuel_type: Mapped[str | None] = mapped_column(String(64))
    transmission: Mapped[str | None] = mapped_column(String(64))
    body_type: Mapped[str | None] = mapped_column(String(64))
    seller_type: Mapped[str | None] = mapped_column(String(64))
    owner_type: Mapped[str | None] = mapped_column(String(64))
    color: Mapped[str | None] = mapped_column(String(64))
    year: Mapped[int | None] = mapped_column(Integer)
    km_driven: Mapped[int | None] = mapped_column(Integer)
    engine_cc: Mapped[int | None] = mapped_column(Integer)
    max_power_bhp: Mapped[float | None] = mapped_column(Float)
    mileage_kmpl: Mapped[float | None] = mapped_column(Float)
    seats: Mapped[int | None] = mapped_column(Integer)
    torque_nm: Mapped[float | None] = mapped_column(Float)
    doors: Mapped[int | None] = mapped_column(Integer)
    actual_price: Mapped[float | None] = mapped_column(Float, default=None)
    feedback_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class DriftReportRecord(Base):
    """One drift report of the monitor (``carprice monitor``): its ``drift.json`` summary, and
    where its Evidently HTML is (a file under the reports folder, and an MLflow artifact).

    Written by :mod:`serving.monitoring.monitor` through :mod:`serving.store.drift_reports`;
    the API serves the newest (``GET /v1/monitoring/drift``) without importing Evidently.
    """

    __tablename__ = "drift_reports"
    __table_args__ = (
        Index("ix_drift_reports_model_name_created_at", "model_name", "created_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    model_name: Mapped[str] = mapped_column(String(255))
    model_version: Mapped[str] = mapped_column(String(64))
    dataset_drift: Mapped[bool] = mapped_column(Boolean)
    drift_share: Mapped[float] = mapped_column(Float)
    current_rows: Mapped[int] = mapped_column(Integer)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    html_file: Mapped[str | None] = mapped_column(String(255), default=None)
    """The HTML's name under the reports folder (``CARPRICE_DRIFT_REPORTS_DIR``)."""
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), default=None)
    """The model version's run the report was logged to (``None``: MLflow was unreachable)."""
    mlflow_artifact: Mapped[str | None] = mapped_column(String(255), default=None)
    """The HTML's artifact path in that run."""
