"""The drift report on DataFrames: the controlled scenario of the issue and drift.json's shape."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from carprice.traffic import cars_frame, parse_spec
from serving.inference.features import FEATURE_NAMES, make_row
from serving.inference.model import LoadedModel, load_version
from serving.inference.registry import Registry
from serving.monitoring.drift import compute
from tests.serving.support import MODEL, ServingRegistry

REFERENCE_ROWS = 5_000  # as the pipeline logs it (above 1,000: Evidently's distance tests)
CURRENT_ROWS = 2_000


@pytest.fixture(scope="module")
def model(registry: ServingRegistry) -> LoadedModel:
    reg = Registry(registry.uri, MODEL, 10)
    info = reg.get_version(registry.good)
    assert info is not None
    return load_version(reg, info)


def priced(model: LoadedModel, seed: int, rows: int, spec: str = "") -> pd.DataFrame:
    """Generated cars (shifted by ``spec``) with the model's price, as the log holds them."""
    cars = cars_frame(rows, seed, parse_spec(spec)).head(rows)
    records = cars[list(FEATURE_NAMES)].astype(object).where(cars.notna(), None)
    prices = model.predict([make_row(r) for r in records.to_dict(orient="records")])
    stamps = pd.date_range("2026-12-01T10:00:00Z", periods=len(cars), freq="s")
    return cars[list(FEATURE_NAMES)].assign(price=prices, actual_price=np.nan, logged_at=stamps)


@pytest.fixture(scope="module")
def reference(model: LoadedModel) -> pd.DataFrame:
    return priced(model, seed=21, rows=REFERENCE_ROWS).drop(columns=["actual_price", "logged_at"])


def check_shape(summary: dict[str, Any]) -> None:
    assert list(summary) == [
        "model_name", "model_version", "reference_rows", "current_rows", "window",
        "dataset_drift", "drift_share", "drifted_features", "features", "prediction",
        "regression",
    ]  # fmt: skip
    assert list(summary["features"]) == list(FEATURE_NAMES)
    for entry in [*summary["features"].values(), summary["prediction"]]:
        assert set(entry) == {"drifted", "score", "method", "threshold"}
        assert isinstance(entry["drifted"], bool)
        assert isinstance(entry["score"], float)
        assert entry["method"]
        assert isinstance(entry["threshold"], float)
    assert summary["drift_share"] == pytest.approx(len(summary["drifted_features"]) / 16)
    json.dumps(summary, allow_nan=False)  # plain JSON, no NaN


def test_traffic_like_training_does_not_drift(model: LoadedModel, reference: pd.DataFrame) -> None:
    current = priced(model, seed=22, rows=CURRENT_ROWS)
    report = compute(current, reference, model_name=MODEL, model_version="1")
    summary = report.summary
    check_shape(summary)
    assert summary["dataset_drift"] is False
    assert len(summary["drifted_features"]) <= 1, summary["drifted_features"]
    assert summary["prediction"]["method"]  # prediction drift reported
    assert summary["features"]["year"]["method"] == "Wasserstein distance (normed)"
    assert summary["reference_rows"] == REFERENCE_ROWS
    assert summary["current_rows"] == CURRENT_ROWS
    assert summary["window"] == {"from": "2026-12-01T10:00:00Z", "to": "2026-12-01T10:33:19Z"}
    assert summary["regression"] is None  # no feedback in the window
    assert report.html.lstrip().lower().startswith("<html") or "<html" in report.html[:500]


def test_year_and_km_shifted_are_flagged(model: LoadedModel, reference: pd.DataFrame) -> None:
    current = priced(model, seed=23, rows=CURRENT_ROWS, spec="year+5,km_driven*2")
    # Feedback on a fifth of the cars: live quality from exactly those rows.
    labelled = np.arange(len(current)) % 5 == 0
    current.loc[labelled, "actual_price"] = current.loc[labelled, "price"] * 1.1
    summary = compute(current, reference, model_name=MODEL, model_version="1").summary
    check_shape(summary)
    drifted = set(summary["drifted_features"])
    assert {"year", "km_driven"} <= drifted, drifted
    assert len(drifted - {"year", "km_driven"}) <= 1, drifted
    assert summary["features"]["year"]["score"] > summary["features"]["year"]["threshold"]
    assert summary["prediction"]["drifted"] is True  # newer cars: higher prices
    regression = summary["regression"]
    assert regression["rows"] == int(labelled.sum())
    expected_mae = float((current["price"] * 0.1)[labelled].mean())
    assert regression["mae"] == pytest.approx(expected_mae, rel=1e-6)
    assert regression["mape"] == pytest.approx(0.1 / 1.1, rel=1e-6)
    assert regression["rmse"] >= regression["mae"]
