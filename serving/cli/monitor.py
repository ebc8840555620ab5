"""``carprice monitor``: drift reports on a schedule, gauges on ``:PORT/metrics``."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from serving.settings import get_settings

log = logging.getLogger(__name__)


def monitor(
    interval: Annotated[float, typer.Option(min=1, help="Seconds between reports.")] = 300.0,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of /metrics.")] = 9100,
    window: Annotated[
        int | None,
        typer.Option(
            min=1, help="Newest logged cars per report (default CARPRICE_DRIFT_WINDOW_ROWS)."
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface of /metrics.")] = "127.0.0.1",
) -> None:
    """Compute a drift report every INTERVAL seconds for the production model version.

    Each report is stored in the database (served by GET /v1/monitoring/drift), as HTML under
    CARPRICE_DRIFT_REPORTS_DIR, and as artifacts of the version's MLflow run; gauges
    (carprice_drift_*, carprice_live_*, carprice_monitor_*) are on :PORT/metrics. Outages of
    the database or MLflow count failed runs; the monitor recovers by itself. SIGTERM stops it.
    """
    try:
        settings = get_settings()
    except ValidationError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None

    from prometheus_client import start_http_server

    from serving.inference.registry import Registry
    from serving.monitoring import drift_metrics, logs
    from serving.monitoring.drift_job import DriftJob
    from serving.monitoring.monitor import Monitor
    from serving.store.database import create_db_engine

    logs.configure(settings.log_level)
    engine = create_db_engine(
        settings.prediction_log_database_url, timeout=settings.prediction_log_timeout
    )
    job = DriftJob(
        Registry(settings.mlflow_tracking_uri, settings.model_name, settings.registry_timeout),
        engine,
        alias=settings.model_alias,
        window_rows=settings.drift_window_rows,
        min_rows=settings.drift_min_rows,
        drift_share=settings.drift_share,
    )
    runner = Monitor(
        job=job,
        store=engine,
        reports_dir=Path(settings.drift_reports_dir),
        window=window or settings.drift_window_rows,
        keep=settings.drift_reports_keep,
        tracking_uri=settings.mlflow_tracking_uri,
        workspace=Path(settings.evidently_workspace) if settings.evidently_workspace else None,
        migrate=settings.database_migrate_on_start,
    )
    try:
        server, _thread = start_http_server(port, addr=host, registry=drift_metrics.REGISTRY)
    except OSError as exc:
        typer.echo(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info(
        "monitoring %s@%s every %.0f s, metrics on %s:%d",
        settings.model_name,
        settings.model_alias,
        interval,
        host,
        port,
    )
    try:
        runner.run_forever(interval, stop)
    finally:
        server.shutdown()
        engine.dispose()
        log.info("monitor stopped")
