"""The prediction-log queries on SQLite and PostgreSQL: windows, stats, prune, feedback."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from sqlalchemy import Engine

from serving.store import predictions
from serving.store.database import create_db_engine, upgrade
from serving.store.predictions import Feedback, Window
from tests.serving.services import postgres_database

T0 = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)


def record(request_id: str, row: int = 0, *, at: datetime = T0, **over: Any) -> dict[str, Any]:
    """One logged car as the writer hands it to :func:`predictions.append`."""
    values: dict[str, Any] = {
        "request_id": request_id,
        "row": row,
        "logged_at": at,
        "api_version": "v1",
        "model_name": "car-price",
        "model_version": "1",
        "caller": "ann",
        "cached": False,
        "price": 12345.5,
        "brand": "Toyota",
        "model": "Corolla",
        "fuel_type": "Petrol",
        "transmission": "Manual",
        "body_type": None,
        "seller_type": "Dealer",
        "owner_type": "First",
        "color": None,
        "year": 2019,
        "km_driven": 42000,
        "engine_cc": None,
        "max_power_bhp": 103.5,
        "mileage_kmpl": None,
        "seats": 5,
        "torque_nm": 140.0,
        "doors": 4,
    }
    values.update(over)
    return values


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty log database of each kind."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/log.db"
        upgrade(url)
        eng = create_db_engine(url)
        yield eng
        eng.dispose()
    else:
        with postgres_database() as url:
            upgrade(url)
            eng = create_db_engine(url)
            yield eng
            eng.dispose()


def fill(engine: Engine, records: list[dict[str, Any]]) -> None:
    predictions.append(engine, pa.Table.from_pylist(records, schema=predictions.LOGGED_SCHEMA))


def test_window_columns_types_and_order(engine: Engine) -> None:
    fill(engine, [record("a", 0), record("a", 1, year=2020, body_type="SUV"), record("b")])
    df = predictions.window(engine, Window())
    assert tuple(df.columns) == predictions.EXPORT_COLUMNS
    assert list(zip(df.request_id, df.row, strict=True)) == [("a", 0), ("a", 1), ("b", 0)]
    assert str(df.year.dtype) == "Int64"
    assert df.year.tolist() == [2019, 2020, 2019]
    assert df.engine_cc.isna().all()
    assert df.body_type.tolist()[1] == "SUV"
    assert str(df.logged_at.dt.tz) == "UTC"
    assert df.logged_at.iloc[0] == T0
    assert df.cached.dtype == bool
    assert math.isnan(df.actual_price.iloc[0])


def test_window_last_range_and_version(engine: Engine) -> None:
    fill(
        engine,
        [
            record(f"r{i}", at=T0 + timedelta(hours=i), model_version="1" if i < 3 else "2")
            for i in range(6)
        ],
    )
    assert predictions.window(engine, Window(last=2)).request_id.tolist() == ["r4", "r5"]
    assert predictions.window(engine, Window(last=2, model_version="1")).request_id.tolist() == [
        "r1",
        "r2",
    ]
    ranged = Window(since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=4))
    assert predictions.window(engine, ranged).request_id.tolist() == ["r1", "r2", "r3"]
    chunks = list(predictions.window_chunks(engine, Window(), chunk_rows=4))
    assert [len(c) for c in chunks] == [4, 2]


def test_drift_window_plain_arrays_of_the_same_cars(engine: Engine) -> None:
    fill(
        engine,
        [
            record(f"r{i}", at=T0 + timedelta(minutes=i), model_version="1" if i < 4 else "2")
            for i in range(6)
        ]
        + [
            record(
                "s", 1, at=T0 + timedelta(hours=1), body_type="SUV", year=None, model_version="2"
            )
        ],
    )
    df = predictions.drift_window(engine, Window(last=3, model_version="1"))
    assert tuple(df.columns) == predictions.DRIFT_COLUMNS
    assert df.logged_at.tolist() == [T0 + timedelta(minutes=i) for i in (1, 2, 3)]
    assert str(df.logged_at.dt.tz) == "UTC"
    assert df.year.dtype == "float64"
    assert df.year.tolist() == [2019.0] * 3
    assert df.engine_cc.isna().all()
    assert df.brand.dtype == object
    assert df.body_type.isna().all()
    assert df.body_type.tolist()[0] is not None  # NaN for a missing category, not None
    assert math.isnan(df.actual_price.iloc[0])
    assert df.price.tolist() == [12345.5] * 3
    newest = predictions.drift_window(engine, Window(last=1))
    assert newest.year.isna().all()
    assert newest.body_type.tolist() == ["SUV"]
    assert len(predictions.drift_window(engine, Window(model_version="3"))) == 0


def test_window_rejects_mixed_or_naive_bounds() -> None:
    with pytest.raises(ValueError, match="not both"):
        Window(last=3, since=T0)
    with pytest.raises(ValueError, match="timezone"):
        Window(since=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="before"):
        Window(since=T0, until=T0)


def test_a_repeated_request_id_keeps_the_first_car(engine: Engine) -> None:
    fill(engine, [record("dup", price=1.0)])
    fill(engine, [record("dup", price=2.0), record("other")])
    df = predictions.window(engine, Window())
    assert df.set_index("request_id").price.to_dict() == {"dup": 1.0, "other": 12345.5}


def test_stats_by_version_and_utc_day(engine: Engine) -> None:
    fill(
        engine,
        [
            record("a", at=T0),  # 23:00 UTC on the 30th
            record("b", at=T0 + timedelta(hours=2)),  # 01:00 on the 1st
            record("c", at=T0 + timedelta(hours=2), model_version="2"),
        ],
    )
    predictions.record_feedback(engine, [Feedback("b", 0, 9000.0)], all_or_nothing=True)
    got = predictions.stats(engine)
    assert [(s.model_version, s.day, s.predictions, s.with_feedback) for s in got] == [
        ("1", "2026-11-30", 1, 0),
        ("1", "2026-12-01", 1, 1),
        ("2", "2026-12-01", 1, 0),
    ]


def test_prune(engine: Engine) -> None:
    fill(engine, [record("old", at=T0 - timedelta(days=31)), record("new", at=T0)])
    assert predictions.prune(engine, 30, now=T0) == 1
    assert predictions.window(engine, Window()).request_id.tolist() == ["new"]
    with pytest.raises(ValueError, match="positive"):
        predictions.prune(engine, 0)


def test_feedback_once_per_car(engine: Engine) -> None:
    fill(engine, [record("a", 0), record("a", 1)])
    first = predictions.record_feedback(engine, [Feedback("a", 1, 9000.0)], all_or_nothing=True)
    assert (first.matched, first.ok) == (1, True)
    again = predictions.record_feedback(engine, [Feedback("a", 1, 1.0)], all_or_nothing=True)
    assert (again.duplicates, again.matched) == ([("a", 1)], 0)
    df = predictions.window(engine, Window())
    assert df.actual_price.tolist()[1] == 9000.0
    assert math.isnan(df.actual_price.tolist()[0])


def test_feedback_all_or_nothing_records_nothing_on_any_error(engine: Engine) -> None:
    fill(engine, [record("a", 0)])
    out = predictions.record_feedback(
        engine, [Feedback("a", 0, 5.0), Feedback("zz", 3, 5.0)], all_or_nothing=True
    )
    assert (out.matched, out.unknown) == (0, [("zz", 3)])
    assert math.isnan(predictions.window(engine, Window()).actual_price.iloc[0])


def test_feedback_bulk_counts_matched_unknown_duplicates(engine: Engine) -> None:
    fill(engine, [record(f"r{i}") for i in range(3)])
    out = predictions.record_feedback(
        engine,
        [
            Feedback("r0", 0, 1.0),
            Feedback("r0", 0, 2.0),
            Feedback("r1", 0, 3.0),
            Feedback("nope", 0, 4.0),
        ],
        all_or_nothing=False,
    )
    assert (out.matched, out.duplicates, out.unknown) == (2, [("r0", 0)], [("nope", 0)])
    assert predictions.window(engine, Window()).actual_price.tolist()[:2] == [1.0, 3.0]


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_feedback_price_must_be_positive_and_finite(bad: float) -> None:
    with pytest.raises(ValueError, match="positive finite"):
        Feedback("a", 0, bad)
