"""The drift report: Evidently 0.7 on logged traffic against the model's training reference.

:func:`compute` takes two DataFrames, the *current* window of the prediction log (the 16
features, the served ``price`` and, where feedback came, ``actual_price``) and the *reference*
sample logged with the model (the 16 features and the model's ``price`` for each), and returns
Evidently's own HTML report plus a summary in the shape of ``drift.json``:

* data drift: ``DataDriftPreset`` over the 16 features (Evidently picks the test per column:
  with a reference above 1,000 rows, normed Wasserstein distance for numbers and Jensen-Shannon
  distance for categories and low-cardinality numbers, both with threshold 0.1). The data set
  drifts when the share of drifted features reaches ``drift_share`` (Evidently's rule, 0.5 by
  default);
* prediction drift: ``ValueDrift`` on the served price;
* live quality: ``RegressionPreset`` on the rows that got their real price (none: ``null``).

Importing Evidently takes seconds, so this module is imported only by the commands that
report (``carprice drift report``, ``carprice monitor``): never by the API workers, which
serve what the monitor stored (a test checks ``serving.main``'s import graph).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Regression, Report
from evidently.core.report import Snapshot
from evidently.metrics import ValueDrift
from evidently.presets import DataDriftPreset, RegressionPreset

from serving.inference.features import FEATURE_NAMES, FEATURES

PREDICTION = "price"
"""The model's price: the served one in the log, the model's own on the reference sample."""
TARGET = "actual_price"
"""The real sale price reported as feedback (NaN until it comes)."""

_CATEGORICAL = [f.name for f in FEATURES if not f.numeric]
_NUMERICAL = [f.name for f in FEATURES if f.numeric]


@dataclass(frozen=True)
class DriftReport:
    """One computed report: the ``drift.json`` summary, Evidently's HTML and its snapshots."""

    summary: dict[str, Any]
    html: str
    snapshots: tuple[Snapshot, ...]
    """Evidently's results (drift, then live quality when there was feedback), for a
    workspace."""


def _prepared(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The columns Evidently reads, as plain dtypes: float64 with NaN for numbers, object with
    NaN for categories (it does not handle pandas' nullable ``Int64``/``string`` and ``pd.NA``)."""
    out: dict[str, Any] = {}
    for name in columns:
        column = df[name]
        if name in _CATEGORICAL:
            values = column.astype(object)
            out[name] = values.where(column.notna(), np.nan)
        else:
            out[name] = pd.to_numeric(column, errors="coerce").astype("float64")
    return pd.DataFrame(out, index=df.index)


def _iso(moment: datetime | pd.Timestamp | None) -> str | None:
    if moment is None or pd.isna(moment):
        return None
    ts = pd.Timestamp(moment)
    ts = ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)
    return str(ts.strftime("%Y-%m-%dT%H:%M:%SZ"))


def _number(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def _drift_results(snapshot: Snapshot) -> tuple[float, dict[str, dict[str, Any]]]:
    """The share of drifted features and, per column, Evidently's score, method, threshold
    and verdict (its own per-column test: FAIL means drift)."""
    data = snapshot.dict()
    verdicts: dict[str, bool] = {}
    for test in data["tests"]:
        params = test.get("metric_config", {}).get("params", {})
        if params.get("type", "").endswith(":ValueDrift"):
            verdicts[str(params["column"])] = str(test["status"]).endswith("FAIL")
    share = 0.0
    columns: dict[str, dict[str, Any]] = {}
    for metric in data["metrics"]:
        config = metric["config"]
        kind = config["type"]
        if kind.endswith(":DriftedColumnsCount"):
            share = float(metric["value"]["share"])
        elif kind.endswith(":ValueDrift"):
            column = str(config["column"])
            columns[column] = {
                "drifted": verdicts[column],
                "score": _number(metric["value"]),
                "method": str(config["method"]),
                "threshold": float(config["threshold"]),
            }
    return share, columns


def _regression(snapshot: Snapshot, rows: int) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for metric in snapshot.dict()["metrics"]:
        kind = metric["config"]["type"].rsplit(":", 1)[-1]
        value = metric["value"]
        values[kind] = value["mean"] if isinstance(value, dict) else value
    return {
        "rows": rows,
        "mae": _number(values["MAE"]),
        "rmse": _number(values["RMSE"]),
        # Evidently gives MAPE in percent; drift.json keeps fractions, as the issue shows.
        "mape": _number(values["MAPE"] / 100),
    }


def _html(snapshots: list[Snapshot]) -> str:
    """One Evidently HTML page with every snapshot's widgets (drift first)."""
    if len(snapshots) == 1:
        return str(snapshots[0].get_html_str(as_iframe=False))
    merged = snapshots[0].to_snapshot_model()
    for other in snapshots[1:]:
        model = other.to_snapshot_model()
        merged.widgets = [*merged.widgets, *model.widgets]
        merged.tests_widgets = [*merged.tests_widgets, *model.tests_widgets]
        merged.metric_results = {**merged.metric_results, **model.metric_results}
        merged.top_level_metrics = [*merged.top_level_metrics, *model.top_level_metrics]
    return str(Snapshot.load_model(merged).get_html_str(as_iframe=False))


def compute(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    *,
    model_name: str,
    model_version: str,
    window: tuple[datetime | None, datetime | None] | None = None,
    drift_share: float = 0.5,
) -> DriftReport:
    """Compare ``current`` (logged cars) with ``reference`` (the model's reference sample).

    Args:
        current: the 16 features, ``price`` and ``actual_price`` (NaN without feedback).
        reference: the 16 features and ``price`` (the model's prediction for each row).
        model_name: the registered model the rows were served by.
        model_version: its version.
        window: the time range the rows were read from; ``None`` takes the first and last
            ``logged_at`` of ``current``.
        drift_share: share of drifted features at which the data set counts as drifted.

    Returns:
        The summary (``drift.json``), Evidently's HTML and its snapshots.
    """
    columns = [*FEATURE_NAMES, PREDICTION]
    definition = DataDefinition(
        numerical_columns=[*_NUMERICAL, PREDICTION], categorical_columns=_CATEGORICAL
    )
    drift_report = Report(
        [
            DataDriftPreset(columns=list(FEATURE_NAMES), drift_share=drift_share),
            ValueDrift(column=PREDICTION),
        ],
        include_tests=True,
    )
    with warnings.catch_warnings():
        # Evidently's plots compute statistics of tiny bins and say so (sklearn, numpy).
        warnings.simplefilter("ignore")
        snapshot = drift_report.run(
            Dataset.from_pandas(_prepared(current, columns), data_definition=definition),
            Dataset.from_pandas(_prepared(reference, columns), data_definition=definition),
        )
    share, results = _drift_results(snapshot)
    snapshots = [snapshot]

    regression = None
    labelled = current[current[TARGET].notna()] if TARGET in current else current.iloc[:0]
    if len(labelled) > 0:
        quality = pd.DataFrame(
            {
                PREDICTION: pd.to_numeric(labelled[PREDICTION]).astype("float64"),
                TARGET: pd.to_numeric(labelled[TARGET]).astype("float64"),
            }
        )
        quality_definition = DataDefinition(
            numerical_columns=[PREDICTION, TARGET],
            regression=[Regression(target=TARGET, prediction=PREDICTION)],
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quality_snapshot = Report([RegressionPreset()]).run(
                Dataset.from_pandas(quality, data_definition=quality_definition), None
            )
        regression = _regression(quality_snapshot, len(labelled))
        snapshots.append(quality_snapshot)

    features = {name: results[name] for name in FEATURE_NAMES}
    start: Any = None
    end: Any = None
    if window is not None:
        start, end = window
    elif "logged_at" in current and len(current):
        start, end = current["logged_at"].min(), current["logged_at"].max()
    summary = {
        "model_name": model_name,
        "model_version": str(model_version),
        "reference_rows": len(reference),
        "current_rows": len(current),
        "window": {"from": _iso(start), "to": _iso(end)},
        "dataset_drift": share >= drift_share,
        "drift_share": share,
        "drifted_features": [name for name in FEATURE_NAMES if features[name]["drifted"]],
        "features": features,
        "prediction": results[PREDICTION],
        "regression": regression,
    }
    return DriftReport(summary=summary, html=_html(snapshots), snapshots=tuple(snapshots))
