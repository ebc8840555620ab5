"""The drift monitor's Prometheus gauges, each defined once with one label set.

They live in their own registry (:data:`REGISTRY`), exposed by ``carprice monitor --port P``
on ``:P/metrics``; the API never imports this module. Gauges keep the last successful run's
values while runs fail, and drop the series of a model version that is no longer monitored.
"""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

REGISTRY = CollectorRegistry(auto_describe=True)
"""The monitor's own registry: its /metrics shows exactly these series."""

DATASET_DRIFTED = Gauge(
    "carprice_drift_dataset_drifted",
    "1 when Evidently flags dataset drift in the monitor's window (the share of drifted "
    "features reached CARPRICE_DRIFT_SHARE), else 0.",
    ["model_version"],
    registry=REGISTRY,
)
DRIFT_SHARE = Gauge(
    "carprice_drift_share",
    "Share of the 16 features Evidently flags as drifted in the monitor's window.",
    ["model_version"],
    registry=REGISTRY,
)
FEATURE_SCORE = Gauge(
    "carprice_drift_feature_score",
    "Evidently's drift score of one feature (normed Wasserstein or Jensen-Shannon distance).",
    ["model_version", "feature"],
    registry=REGISTRY,
)
FEATURE_DRIFTED = Gauge(
    "carprice_drift_feature_drifted",
    "1 when Evidently flags the feature as drifted, else 0.",
    ["model_version", "feature"],
    registry=REGISTRY,
)
LIVE_MAE = Gauge(
    "carprice_live_mae",
    "Mean absolute error (EUR) on the window's cars whose real price came back as feedback.",
    ["model_version"],
    registry=REGISTRY,
)
LIVE_ROWS = Gauge(
    "carprice_live_rows",
    "Cars in the monitor's window with feedback (what carprice_live_mae is computed on).",
    ["model_version"],
    registry=REGISTRY,
)
LAST_RUN = Gauge(
    "carprice_monitor_last_run_timestamp_seconds",
    "Unix time at which the monitor's last successful report was stored (0: none yet).",
    registry=REGISTRY,
)
RUNS = Counter(
    "carprice_monitor_runs",
    "Monitor runs by outcome: ok (report stored), skipped (too few logged cars), failed "
    "(database, MLflow or the report failed; the gauges keep the last values).",
    ["outcome"],
    registry=REGISTRY,
)
OUTCOMES = ("ok", "skipped", "failed")
for _outcome in OUTCOMES:
    RUNS.labels(_outcome)  # every outcome exported from the start (0), so rate() sees the first

_BY_VERSION = (DATASET_DRIFTED, DRIFT_SHARE, LIVE_MAE, LIVE_ROWS)
_BY_FEATURE = (FEATURE_SCORE, FEATURE_DRIFTED)
_published: list[str] = []  # the model version the gauges show


def publish(summary: dict[str, Any]) -> None:
    """Set the gauges from a report summary (``drift.json`` shape). A new model version's
    report removes the previous version's series, so a promotion leaves no stale drift."""
    version = str(summary["model_version"])
    if _published and _published[0] != version:
        for gauge in (*_BY_VERSION, *_BY_FEATURE):
            gauge.clear()
    _published[:] = [version]
    DATASET_DRIFTED.labels(version).set(1 if summary["dataset_drift"] else 0)
    DRIFT_SHARE.labels(version).set(float(summary["drift_share"]))
    for feature, result in summary["features"].items():
        score = result["score"]
        FEATURE_SCORE.labels(version, feature).set(float("nan") if score is None else score)
        FEATURE_DRIFTED.labels(version, feature).set(1 if result["drifted"] else 0)
    regression = summary["regression"]
    LIVE_ROWS.labels(version).set(regression["rows"] if regression else 0)
    if regression and regression["mae"] is not None:
        LIVE_MAE.labels(version).set(regression["mae"])
    else:  # no feedback in this window: no MAE, rather than the last window's
        with contextlib.suppress(KeyError):
            LIVE_MAE.remove(version)
