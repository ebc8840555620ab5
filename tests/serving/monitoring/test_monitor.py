"""The monitor: a run stores the report everywhere and sets the gauges; outages of the database
and of MLflow count failed runs, keep the gauges, and the monitor recovers by itself."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from sqlalchemy import Engine

from serving.inference.model import LoadedModel
from serving.inference.registry import Registry
from serving.monitoring import drift_metrics
from serving.monitoring.drift_job import DriftJob
from serving.monitoring.monitor import Monitor
from serving.store import drift_reports
from serving.store.database import create_db_engine, upgrade
from tests.serving.drift_support import DriftRegistry
from tests.serving.monitoring.logged import log_cars
from tests.serving.proxy import TcpProxy
from tests.serving.services import postgres_database
from tests.serving.support import MODEL


def gauge(name: str, **labels: str) -> float | None:
    return drift_metrics.REGISTRY.get_sample_value(name, labels)


def runs(outcome: str) -> float:
    return gauge("carprice_monitor_runs_total", outcome=outcome) or 0.0


def monitor_on(
    registry: Registry, engine: Engine, tmp_path: Path, tracking_uri: str | None
) -> Monitor:
    job = DriftJob(registry, engine, window_rows=2_000, min_rows=300)
    return Monitor(
        job=job,
        store=engine,
        reports_dir=tmp_path / "reports",
        window=2_000,
        keep=2,
        tracking_uri=tracking_uri,
    )


def test_a_run_stores_the_report_everywhere(
    drift_registry: DriftRegistry,
    drift_model: LoadedModel,
    log_db: tuple[str, Engine],
    tmp_path: Path,
) -> None:
    _, engine = log_db
    monitor = monitor_on(drift_registry.registry(), engine, tmp_path, drift_registry.uri)
    log_cars(engine, drift_model, 100, seed=30)
    skipped = runs("skipped")
    assert monitor.run_once() == "skipped"  # 100 < 300 cars: no report
    assert runs("skipped") == skipped + 1
    assert drift_reports.latest(engine, MODEL) is None

    log_cars(engine, drift_model, 700, seed=31, feedback=0.2)
    ok = runs("ok")
    before = time.time()
    assert monitor.run_once() == "ok"
    assert runs("ok") == ok + 1

    stored = drift_reports.latest(engine, MODEL)
    assert stored is not None
    summary = stored.summary
    assert summary["current_rows"] == 800
    assert summary["model_version"] == "1"
    assert 100 <= summary["regression"]["rows"] <= 200
    # the gauges
    assert gauge("carprice_drift_share", model_version="1") == summary["drift_share"]
    assert gauge("carprice_drift_dataset_drifted", model_version="1") == 0
    assert gauge("carprice_live_rows", model_version="1") == summary["regression"]["rows"]
    assert gauge("carprice_live_mae", model_version="1") == pytest.approx(
        summary["regression"]["mae"]
    )
    for feature, result in summary["features"].items():
        labels = {"model_version": "1", "feature": feature}
        assert gauge("carprice_drift_feature_score", **labels) == pytest.approx(result["score"])
        assert gauge("carprice_drift_feature_drifted", **labels) == float(result["drifted"])
    assert (gauge("carprice_monitor_last_run_timestamp_seconds") or 0) >= before
    # the HTML under the reports folder
    assert stored.html_file is not None
    html = (tmp_path / "reports" / stored.html_file).read_text()
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert len(html) > 100_000  # Evidently's page, its scripts inline
    # the artifacts and metrics of the version's MLflow run
    assert stored.mlflow_run_id == drift_registry.run_id
    client = MlflowClient(tracking_uri=drift_registry.uri)
    folder = stored.mlflow_artifact.rsplit("/", 1)[0] if stored.mlflow_artifact else ""
    names = {Path(a.path).name for a in client.list_artifacts(drift_registry.run_id, folder)}
    assert names == {"drift.html", "drift.json"}
    history = client.get_metric_history(drift_registry.run_id, "monitor_drift_share")
    assert history[-1].value == pytest.approx(summary["drift_share"])

    # The reports folder keeps the newest `keep` files; the database keeps every report.
    for _ in range(2):
        assert monitor.run_once() == "ok"
    assert len(list((tmp_path / "reports").glob("drift-*.html"))) == 2
    assert len(drift_reports.history(engine, MODEL)) == 3


@pytest.fixture
def mlflow_server(drift_registry: DriftRegistry, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real MLflow tracking server (MLflow's own app, served in a thread: a separate
    ``mlflow server`` takes minutes to start on a busy machine) on the drift registry's store."""
    from mlflow.server import BACKEND_STORE_URI_ENV_VAR, REGISTRY_STORE_URI_ENV_VAR
    from mlflow.server import app as tracking_app
    from mlflow.tracking._model_registry import utils as registry_utils
    from werkzeug.serving import make_server

    monkeypatch.setenv(BACKEND_STORE_URI_ENV_VAR, drift_registry.uri)
    monkeypatch.setenv(REGISTRY_STORE_URI_ENV_VAR, drift_registry.uri)
    # The server's first registry request makes its store the process's registry URI (global
    # and MLFLOW_REGISTRY_URI): undone after the test, or every later fixture would register
    # its models into this registry.
    monkeypatch.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "")  # undone (unset again) after the test
    monkeypatch.delenv("MLFLOW_REGISTRY_URI")
    server = make_server("127.0.0.1", 0, tracking_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)


RECOVERY_DEADLINE = 300.0
"""Seconds the monitor may take to get a run through after an outage ends: generous, for a
loaded 2-core machine; the test waits on the outcome, never on a fixed delay."""


def run_until_ok(monitor: Monitor, deadline: float = RECOVERY_DEADLINE) -> int:
    """Run the monitor, a second apart, until a run is ``ok``; how many failed before it.

    Fails the test when no run succeeds within ``deadline`` seconds (the monitor did not
    recover) or a run is anything but ``ok`` or ``failed``.
    """
    failed = 0
    end = time.monotonic() + deadline
    while (outcome := monitor.run_once()) != "ok":
        assert outcome == "failed", outcome
        failed += 1
        assert time.monotonic() < end, f"no successful run in {deadline:.0f} s ({failed} failed)"
        time.sleep(1)
    return failed


@pytest.mark.postgres
@pytest.mark.integration
def test_outages_count_failed_runs_keep_the_gauges_and_recover(
    drift_model: LoadedModel,
    mlflow_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # MLflow's HTTP client reads these at each request. A generous timeout (the in-process
    # server is slow on a loaded machine) costs the outage runs nothing: a stopped proxy
    # refuses at once. No retries: a refused request is a failed run, not minutes of backoff.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with postgres_database() as pg_url, TcpProxy(pg_url) as db, TcpProxy(mlflow_server) as ml:
        upgrade(pg_url)
        direct = create_db_engine(pg_url)
        log_cars(direct, drift_model, 600, seed=40, feedback=0.3)
        # The monitor reaches both through the proxies; statements and connection attempts
        # bounded generously (a half-open connection must fail the run, not hang it).
        engine = create_db_engine(db.url, timeout=120)
        monitor = monitor_on(Registry(ml.url, MODEL, 120), engine, tmp_path, ml.url)
        try:
            assert run_until_ok(monitor) == 0  # both up: the first run succeeds
            share = gauge("carprice_drift_share", model_version="1")
            mae = gauge("carprice_live_mae", model_version="1")
            stamp = gauge("carprice_monitor_last_run_timestamp_seconds")
            assert share is not None
            assert mae is not None
            assert stamp is not None
            rows = 600

            for outage in (db, ml):
                outage.stop()  # refused connections, then nothing listening
                failed = runs("failed")
                for _ in range(2):
                    assert monitor.run_once() == "failed"
                assert runs("failed") == failed + 2
                # the last values stay exported while runs fail
                assert gauge("carprice_drift_share", model_version="1") == share
                assert gauge("carprice_live_mae", model_version="1") == mae
                assert gauge("carprice_monitor_last_run_timestamp_seconds") == stamp
                outage.start()
                rows += 50
                log_cars(direct, drift_model, 50, seed=41 + len(outage.url))
                failed = runs("failed")
                retries = run_until_ok(monitor)  # recovered by itself, no restart
                assert runs("failed") == failed + retries
                newest = drift_reports.latest(direct, MODEL)
                assert newest is not None
                assert newest.summary["current_rows"] == rows  # this run's report, stored
                now = gauge("carprice_monitor_last_run_timestamp_seconds")
                assert now is not None
                assert now > stamp
                # the recovered run's values are the ones the next outage must keep
                share = gauge("carprice_drift_share", model_version="1")
                mae = gauge("carprice_live_mae", model_version="1")
                stamp = now
        finally:
            engine.dispose()
            direct.dispose()
