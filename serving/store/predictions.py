"""Queries on the prediction log: a window of logged cars, counts, pruning, ground-truth feedback.

The one place that reads or updates ``prediction_log`` (the batched writer in
:mod:`serving.monitoring.prediction_log` only inserts). Used by ``carprice predictions``,
``carprice feedback``, ``POST /v1/feedback`` and the drift report. Every function takes an
:class:`~sqlalchemy.Engine` to the log's database
(:func:`serving.store.database.create_db_engine` on ``Settings.prediction_log_database_url``).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
from sqlalchemy import (
    Connection,
    Engine,
    Insert,
    Select,
    Table,
    delete,
    func,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, IntegrityError

from serving.inference.features import FEATURE_NAMES, FEATURES
from serving.store.tables import PredictionLog, utcnow

EXPORT_COLUMNS: tuple[str, ...] = (
    "request_id",
    "row",
    "logged_at",
    "api_version",
    "model_name",
    "model_version",
    "price",
    "cached",
    "caller",
    *FEATURE_NAMES,
    "actual_price",
)
"""Columns of :func:`window`'s frame (and of ``carprice predictions export``), in this order."""

_DTYPES: dict[str, str] = {
    "row": "int64",
    "price": "float64",
    "cached": "bool",
    "actual_price": "float64",
    **{
        f.name: "string"
        if f.kind == "categorical"
        else "Int64"
        if f.kind == "integer"
        else "float64"
        for f in FEATURES
    },
    **{c: "string" for c in ("request_id", "api_version", "model_name", "model_version", "caller")},
}

_CATEGORICAL = frozenset(f.name for f in FEATURES if not f.numeric)

_TABLE: Table = PredictionLog.__table__  # type: ignore[assignment]  # a Table at runtime


LOGGED_COLUMNS: tuple[str, ...] = tuple(c for c in EXPORT_COLUMNS if c != "actual_price")
"""Columns of the table given to :func:`append` (everything known when the car is priced)."""

_ARROW_KIND = {"categorical": pa.string(), "integer": pa.int64(), "float": pa.float64()}
LOGGED_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("row", pa.int64()),
        ("logged_at", pa.timestamp("us", tz="UTC")),
        ("api_version", pa.string()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("price", pa.float64()),
        ("cached", pa.bool_()),
        ("caller", pa.string()),
        *((f.name, _ARROW_KIND[f.kind]) for f in FEATURES),
    ]
)
"""The Arrow schema of the table given to :func:`append` (:data:`LOGGED_COLUMNS`, in order)."""


def _insert_ignoring_repeats(dialect: str) -> Insert:
    # A client may send the same X-Request-ID twice: the first car logged under (request_id,
    # row) stays, and a repeat must not fail the rest of its batch.
    if dialect == "postgresql":
        return postgresql.insert(_TABLE).on_conflict_do_nothing(
            index_elements=["request_id", "row"]
        )
    if dialect == "sqlite":
        return sqlite.insert(_TABLE).on_conflict_do_nothing(index_elements=["request_id", "row"])
    return _TABLE.insert()


_COPY = "COPY prediction_log ({}) FROM STDIN WITH (FORMAT csv)".format(
    ", ".join(f'"{c}"' for c in LOGGED_COLUMNS)
)
# Rows formatted 8,192 at a time, not Arrow's default 1,024: a writer's batch (~5,000 cars) in
# one go, 0.71 -> 0.61 us a car.
_CSV = pa_csv.WriteOptions(include_header=False, quoting_style="needed", batch_size=8192)
# PostgreSQL text cannot hold NUL; a car whose text held one is logged with U+FFFD there.
_NUL, _REPLACEMENT = b"\x00", "\ufffd".encode()


class RefusedError(Exception):
    """The database refused logged cars for what they hold: writing them again cannot help."""


def append(bind: Engine | Connection, cars: pa.Table) -> None:
    """Insert logged cars (a table of :data:`LOGGED_SCHEMA`) in one transaction.

    ``bind``: an engine (a pooled connection for this call), or a connection not in a
    transaction, such as the one the log's writer keeps between batches.

    PostgreSQL: one ``COPY`` of the table as CSV (Arrow writes it, no Python per car: the
    cheapest bulk load, for the server too); if a request id repeats one already logged, the
    batch is written again as one ``executemany`` of ``INSERT ... ON CONFLICT DO NOTHING``.
    SQLite: that ``executemany``, one prepared statement.

    Raises:
        RefusedError: the database rejected the cars' values. Other errors (unreachable, timeouts)
            propagate as they are: the same cars may be written once the database is back.
    """
    if cars.num_rows == 0:
        return
    if isinstance(bind, Engine):
        with bind.connect() as connection:
            append(connection, cars)
        return
    connection = bind
    try:
        if connection.dialect.name == "postgresql":
            import psycopg

            try:
                with connection.begin():
                    _copy(connection, cars)
                return
            except psycopg.errors.UniqueViolation:
                pass
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                raise RefusedError(str(exc)) from exc
        with connection.begin():
            connection.execute(_insert_ignoring_repeats(connection.dialect.name), cars.to_pylist())
    except (DataError, IntegrityError) as exc:
        raise RefusedError(str(exc.orig)) from exc


def _copy(connection: Connection, cars: pa.Table) -> None:
    # Arrow writes a timestamp with a time zone ~15x slower than one without (1.5 against
    # 0.1 us a car, most of the CSV's cost): the UTC instants go as naive timestamps, read in
    # UTC by this transaction's time zone.
    at = cars.schema.get_field_index("logged_at")
    cars = cars.set_column(at, "logged_at", cars.column(at).cast(pa.timestamp("us")))
    connection.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")
    out = io.BytesIO()
    pa_csv.write_csv(cars, out, _CSV)
    data = out.getvalue()
    if _NUL in data:
        data = data.replace(_NUL, _REPLACEMENT)
    cursor = connection.connection.cursor()
    with cursor.copy(_COPY) as copy:
        copy.write(data)


@dataclass(frozen=True, slots=True)
class Window:
    """Which logged cars to read: the newest ``last`` rows, or those logged in
    ``[since, until)``; either way only ``model_version``'s when given. All unset: everything."""

    last: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    model_version: str | None = None

    def __post_init__(self) -> None:
        if self.last is not None and (self.since is not None or self.until is not None):
            raise ValueError("give either the last N rows or a time range, not both")
        if self.last is not None and self.last < 1:
            raise ValueError(f"last must be at least 1, got {self.last}")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware")
        if self.since and self.until and self.since >= self.until:
            raise ValueError("since must be before until")


def _select(window: Window, names: Sequence[str] = EXPORT_COLUMNS) -> Select[Any]:
    query = select(*(_TABLE.c[name] for name in names))
    if window.model_version is not None:
        query = query.where(_TABLE.c.model_version == window.model_version)
    if window.since is not None:
        query = query.where(_TABLE.c.logged_at >= window.since)
    if window.until is not None:
        query = query.where(_TABLE.c.logged_at < window.until)
    if window.last is not None:
        newest = query.add_columns(_TABLE.c.id).order_by(_TABLE.c.id.desc()).limit(window.last)
        sub = newest.subquery()
        return select(*(sub.c[name] for name in names)).order_by(sub.c.id)
    return query.order_by(_TABLE.c.id)


def frame(records: Iterable[Sequence[Any]]) -> pd.DataFrame:
    """Logged rows (values in :data:`EXPORT_COLUMNS` order) as a typed DataFrame.

    Integer features are nullable ``Int64``, categoricals ``string``, ``logged_at`` UTC.
    """
    df = pd.DataFrame.from_records([tuple(r) for r in records], columns=list(EXPORT_COLUMNS))
    df = df.astype(_DTYPES)
    df["logged_at"] = pd.to_datetime(df["logged_at"], utc=True)
    return df


def window(engine: Engine, which: Window) -> pd.DataFrame:
    """The logged cars in ``which``, oldest first, one DataFrame row per car
    (columns :data:`EXPORT_COLUMNS`; ``actual_price`` NaN until feedback came)."""
    with engine.connect() as connection:
        return frame(connection.execute(_select(which)))


DRIFT_COLUMNS: tuple[str, ...] = ("logged_at", *FEATURE_NAMES, "price", "actual_price")
"""Columns of :func:`drift_window`'s frame, in this order."""


def drift_window(engine: Engine, which: Window) -> pd.DataFrame:
    """What a drift report reads of the cars in ``which``, oldest first: ``logged_at`` (UTC),
    the 16 features, the served ``price`` and ``actual_price`` (columns :data:`DRIFT_COLUMNS`).

    Plain NumPy dtypes straight from the fetched tuples, none of :func:`window`'s request
    columns or nullable pandas dtypes: float64 with NaN for numbers, object with NaN for
    categories (what Evidently reads; 50,000 rows in a fraction of a second).
    """
    with engine.connect() as connection:
        rows = connection.execute(_select(which, DRIFT_COLUMNS)).all()
    values = list(zip(*rows, strict=True)) if rows else [()] * len(DRIFT_COLUMNS)
    data: dict[str, Any] = {"logged_at": pd.to_datetime(list(values[0]), utc=True)}
    for name, column in zip(DRIFT_COLUMNS[1:], values[1:], strict=True):
        if name in _CATEGORICAL:
            data[name] = np.array([math.nan if v is None else v for v in column], dtype=object)
        else:
            data[name] = np.array(column, dtype=np.float64)  # None becomes NaN
    return pd.DataFrame(data, columns=list(DRIFT_COLUMNS))


def window_chunks(
    engine: Engine, which: Window, chunk_rows: int = 50_000
) -> Iterable[pd.DataFrame]:
    """:func:`window` in DataFrames of at most ``chunk_rows`` rows, for exports larger than
    memory (the rows are streamed from the database, not fetched at once)."""
    with engine.connect() as connection:
        result = connection.execution_options(stream_results=True, yield_per=chunk_rows).execute(
            _select(which)
        )
        for part in result.partitions(chunk_rows):
            yield frame(part)


@dataclass(frozen=True, slots=True)
class DayCount:
    """Logged cars of one model version on one UTC day, and how many got their real price."""

    model_version: str
    day: str
    predictions: int
    with_feedback: int


def stats(engine: Engine, which: Window = Window()) -> list[DayCount]:
    """Counts of logged cars by model version and UTC day (``YYYY-MM-DD``), oldest day first."""
    if which.last is not None:
        raise ValueError("stats take a time range, not the last N rows")
    logged_at = _TABLE.c.logged_at
    if engine.dialect.name == "postgresql":
        day: Any = func.to_char(func.timezone("UTC", logged_at), "YYYY-MM-DD")
    else:  # SQLite stores UTC text (serving.store.tables.UTCDateTime)
        day = func.strftime("%Y-%m-%d", logged_at)
    day = day.label("day")
    query = select(
        _TABLE.c.model_version,
        day,
        func.count().label("predictions"),
        func.count(_TABLE.c.actual_price).label("with_feedback"),
    )
    if which.model_version is not None:
        query = query.where(_TABLE.c.model_version == which.model_version)
    if which.since is not None:
        query = query.where(logged_at >= which.since)
    if which.until is not None:
        query = query.where(logged_at < which.until)
    query = query.group_by(_TABLE.c.model_version, day).order_by(day, _TABLE.c.model_version)
    with engine.connect() as connection:
        return [
            DayCount(str(v), str(d), int(n), int(f)) for v, d, n, f in connection.execute(query)
        ]


def prune(engine: Engine, older_than_days: float, *, now: datetime | None = None) -> int:
    """Delete the cars logged more than ``older_than_days`` days ago; returns how many."""
    if not older_than_days > 0:
        raise ValueError(f"older_than_days must be positive, got {older_than_days}")
    cutoff = (now or utcnow()) - timedelta(days=older_than_days)
    with engine.begin() as connection:
        result = connection.execute(delete(_TABLE).where(_TABLE.c.logged_at < cutoff))
        return int(result.rowcount)


# --- feedback ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Feedback:
    """The real sale price of one logged car, named by its request id and row."""

    request_id: str
    row: int
    actual_price: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.actual_price) and self.actual_price > 0):
            raise ValueError(
                f"actual_price must be a positive finite number, got {self.actual_price}"
            )

    @property
    def key(self) -> tuple[str, int]:
        return (self.request_id, self.row)


@dataclass(slots=True)
class FeedbackOutcome:
    """What became of a list of reports: how many were recorded, which cars are not in the log,
    which already had a price (the first value stays)."""

    matched: int = 0
    unknown: list[tuple[str, int]] = field(default_factory=list)
    duplicates: list[tuple[str, int]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unknown and not self.duplicates


_LOOKUP_CHUNK = 500  # keys per IN (...) look-up, well under every backend's parameter limit


def record_feedback(
    engine: Engine,
    reports: Sequence[Feedback],
    *,
    all_or_nothing: bool,
    now: datetime | None = None,
) -> FeedbackOutcome:
    """Set ``actual_price`` (and ``feedback_at``) of the logged cars the reports name.

    A car not in the log is ``unknown``; one that already has a price (or is named twice in
    ``reports``) is a ``duplicate`` and keeps its first value. With ``all_or_nothing`` (the API)
    nothing is recorded unless every report can be (``matched`` is then 0); without it (bulk
    import) the good reports are recorded and the others counted.
    """
    at = now or datetime.now(UTC)
    outcome = FeedbackOutcome()
    with engine.connect() as connection:
        found: dict[tuple[str, int], tuple[int, float | None]] = {}
        keys = list(dict.fromkeys(r.key for r in reports))
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[start : start + _LOOKUP_CHUNK]
            query = select(
                _TABLE.c.id, _TABLE.c.request_id, _TABLE.c.row, _TABLE.c.actual_price
            ).where(tuple_(_TABLE.c.request_id, _TABLE.c.row).in_(chunk))
            for row_id, request_id, row, actual in connection.execute(query):
                found[(request_id, row)] = (row_id, actual)
        seen: set[tuple[str, int]] = set()
        todo: list[tuple[int, float, tuple[str, int]]] = []
        for report in reports:
            key = report.key
            hit = found.get(key)
            if hit is None:
                outcome.unknown.append(key)
            elif hit[1] is not None or key in seen:
                outcome.duplicates.append(key)
            else:
                todo.append((hit[0], report.actual_price, key))
            seen.add(key)
        if all_or_nothing and not outcome.ok:
            connection.rollback()
            return outcome
        for row_id, price, key in todo:
            # "IS NULL" in the UPDATE, not only in the look-up: of two concurrent reports for one
            # car, exactly one changes the row (PostgreSQL re-checks the condition after the lock).
            result = connection.execute(
                update(_TABLE)
                .where(_TABLE.c.id == row_id, _TABLE.c.actual_price.is_(None))
                .values(actual_price=price, feedback_at=at)
            )
            if result.rowcount == 1:
                outcome.matched += 1
            else:
                outcome.duplicates.append(key)
        if all_or_nothing and not outcome.ok:
            connection.rollback()
            outcome.matched = 0
        else:
            connection.commit()
    return outcome
