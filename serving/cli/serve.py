"""``carprice serve``: run the API under uvicorn, with JSON logs and a graceful shutdown."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from serving.cli.config import load_settings
from serving.monitoring import logs
from serving.settings import Settings

HTTP_PROTOCOL = "serving.api.http:OneWriteHttpToolsProtocol"
"""uvicorn's ``http`` of ``carprice serve`` (an import string: each worker imports it)."""


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes (each loads its own model).")
    ] = 1,
) -> None:
    """Serve the registry's production model over HTTP (/v1, /v2, /docs, /metrics).

    Settings come from CARPRICE_* variables and MLFLOW_TRACKING_URI (see serving/README.md).
    SIGTERM or Ctrl-C stops accepting connections, lets in-flight requests finish (up to
    CARPRICE_SHUTDOWN_TIMEOUT seconds) and writes the queued prediction log. /metrics shows
    the totals of all workers.
    """
    settings = load_settings()  # fail here, once, not in every worker
    made = fresh_multiprocess_dir() is None
    if made:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="carprice-metrics-")
    try:
        _run(settings, host, port, workers)
    finally:
        if made:
            shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def _run(settings: Settings, host: str, port: int, workers: int) -> None:
    # prometheus_client picks its storage (memory or the directory's files) when imported:
    # the directory must be set first, here and in every worker (which inherit it).
    if "prometheus_client" in sys.modules:  # pragma: no cover - a programming error
        raise RuntimeError("prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR")
    import uvicorn

    uvicorn.run(
        "serving.main:app",
        host=host,
        port=port,
        workers=workers,
        access_log=False,  # the app writes its own, with request id and model version
        log_config=logs.uvicorn_log_config(settings.log_level),
        timeout_graceful_shutdown=int(settings.shutdown_timeout),
        # uvicorn kills a worker that does not answer its supervisor's ping within this many
        # seconds (default 5): on a loaded 2-core machine a worker importing MLflow and loading
        # its model missed it and was killed, over and over, never serving.
        timeout_worker_healthcheck=60,
        server_header=False,
        http=HTTP_PROTOCOL,  # one write per response (serving.api.http)
    )


def fresh_multiprocess_dir() -> Path | None:
    """Empty (or create) ``PROMETHEUS_MULTIPROC_DIR`` before any worker starts.

    prometheus_client's multiprocess mode keeps one file per worker pid there and sums them on
    each scrape; files left by a previous run would keep counting dead workers (and their
    counters), so every start begins with an empty directory. Unset: nothing to do (``serve``
    then makes a temporary one and removes it at exit).
    """
    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not value:
        return None
    path = Path(value)
    if path.is_dir():
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    else:
        path.mkdir(parents=True)
    return path
