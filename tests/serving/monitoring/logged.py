"""Logged predictions for the drift tests: generated cars priced by a real model version, written
to a real prediction log with the log's own ``append``."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
from sqlalchemy import Engine

from carprice.traffic import cars_frame, parse_spec
from serving.inference.features import BY_NAME, FEATURE_NAMES, make_row
from serving.inference.model import LoadedModel
from serving.store import predictions

_requests = itertools.count()


def log_cars(
    engine: Engine,
    model: LoadedModel,
    rows: int,
    *,
    seed: int,
    spec: str = "",
    feedback: float = 0.0,
    start: datetime | None = None,
) -> int:
    """Log ``rows`` cars (shifted by ``spec``) as priced by ``model``; with ``feedback`` a
    share of them gets its generator price as ``actual_price``. Returns how many were logged."""
    cars = cars_frame(rows, seed, parse_spec(spec)).head(rows)
    values = cars[list(FEATURE_NAMES)].astype(object).where(cars.notna(), None)
    features = [make_row(r) for r in values.to_dict(orient="records")]
    prices = model.predict(features)
    start = start or datetime.now(UTC) - timedelta(seconds=len(features))
    batch = f"drift-test-{seed}-{next(_requests)}"
    records: list[dict[str, Any]] = []
    for i, (row, price) in enumerate(zip(features, prices, strict=True)):
        record: dict[str, Any] = {
            "request_id": batch,
            "row": i,
            "logged_at": start + timedelta(seconds=i),
            "api_version": "v1",
            "model_name": model.name,
            "model_version": model.version,
            "caller": "tests",
            "cached": False,
            "price": float(price),
        }
        for name, value in row.items():
            integer = BY_NAME[name].kind == "integer"
            record[name] = int(value) if integer and value is not None else value
        records.append(record)
    predictions.append(engine, pa.Table.from_pylist(records, schema=predictions.LOGGED_SCHEMA))
    if feedback > 0:
        rng = np.random.default_rng(seed)
        truth = cars["selling_price"].to_numpy()
        reports = [
            predictions.Feedback(batch, i, float(truth[i]))
            for i in range(len(records))
            if rng.random() < feedback
        ]
        predictions.record_feedback(engine, reports, all_or_nothing=False)
    return len(records)
