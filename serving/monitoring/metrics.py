"""The API's own Prometheus metrics, each defined once with one label set.

HTTP metrics (requests, latency by route and status) are the set prometheus-fastapi-instrumentator
defines by default, recorded by its middleware and by the fast lane; ``/metrics`` exposes all.
serving/README.md lists every metric with its labels.

Several workers: ``carprice serve`` points ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's own
variable) at a fresh directory before anything imports prometheus_client; every process then
writes its samples to files there and ``/metrics`` sums them (``MultiProcessCollector``), so a
scrape of any worker shows the totals of all. Every gauge says how its per-worker values
combine (``multiprocess_mode``); updates are written by :mod:`serving.monitoring.metric_files`
(the same files, a fraction of the cost per update); a worker that exits is marked dead
(:func:`worker_exited`), which removes its live gauges and keeps its counts.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, Summary, multiprocess, values
from prometheus_fastapi_instrumentator import metrics as http_metrics

from serving.monitoring import metric_files

if values.ValueClass._multiprocess:  # prometheus_client chose its files when imported
    # Before the first metric: cheaper writes into the same files (see metric_files).
    metric_files.install(os.environ["PROMETHEUS_MULTIPROC_DIR"])

MODEL_LOADS = Counter(
    "carprice_model_loads",
    "Model versions loaded: kind is initial (the first production model of a worker), reload "
    "(a newly promoted production version) or pinned (a /v2 request for a version); outcome ok "
    "or rejected, with the reason of a rejection (empty when ok).",
    ["kind", "outcome", "reason"],
)
MODEL_READY = Gauge(
    "carprice_model_ready",
    "1 while a production model is loaded and smoke-tested, else 0 (the lowest of the live "
    "workers: 1 means every worker is ready).",
    multiprocess_mode="livemin",
)
MODEL_VERSION = Gauge(
    "carprice_model_version",
    "Registry version of the production model served (the highest of the live workers).",
    multiprocess_mode="livemax",
)
MODEL_INFO = Gauge(
    "carprice_model_info",
    "Info metric: 1 for the production model version a live worker serves, 0 for one it "
    "served before (prometheus_client's Info type has no multiprocess mode).",
    ["model_name", "model_version"],
    multiprocess_mode="livemax",
)
PREDICTIONS = Counter(
    "carprice_predictions",
    "Cars priced (a batch of 1,000 counts 1,000) by API version, model version and whether the "
    "price came from the cache.",
    ["api_version", "model_version", "cached"],
)
INFERENCE_SECONDS = Histogram(
    "carprice_model_inference_seconds",
    "Seconds a request waited for the model to price its cache misses (micro-batching "
    "included), apart from the request's own seconds.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
CACHE_EVENTS = Counter(
    "carprice_cache_events",
    "Prediction cache: hit and miss count rows; error counts failed cache calls; skipped "
    "counts calls not made because the circuit breaker is open; dropped counts prices not "
    "written because the Redis write queue was full.",
    ["event"],
)
RATE_LIMITED = Counter(
    "carprice_rate_limited_requests",
    "Requests refused with 429, by limit: request (per principal) or login (per client address).",
    ["limit"],
)
LOG_QUEUE_DEPTH = Gauge(
    "carprice_prediction_log_queue_depth",
    "Cars waiting to be written to the prediction log (summed over the live workers).",
    multiprocess_mode="livesum",
)
LOG_ROWS_WRITTEN = Counter(
    "carprice_prediction_log_rows_written", "Cars written to the prediction log."
)
LOG_ROWS_DROPPED = Counter(
    "carprice_prediction_log_rows_dropped",
    "Cars not logged because the writer's queue was full (the database slow or unreachable).",
)
LOG_WRITE_ERRORS = Counter(
    "carprice_prediction_log_write_errors",
    "Failed writes of a batch to the prediction log (the batch is retried, not lost).",
)

MICROBATCH_ROWS = Histogram(
    "carprice_microbatch_rows",
    "Rows per coalesced model call on the fast path (1 = no batching happened).",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
FAST_LANE = Counter(
    "carprice_fast_lane_requests",
    "/v1 prediction requests the fast lane answered itself (served) or handed to the full "
    "FastAPI stack (handed_over: invalid input, bad credentials, CORS, ...).",
    ["outcome"],
)
REFUSALS = Counter(
    "carprice_refusals",
    "Refused requests (401, 413, 422 limit_exceeded / invalid_json) whose answer was held for "
    "CARPRICE_REFUSAL_DELAY (held) or sent at once because CARPRICE_REFUSAL_HOLD_MAX answers "
    "were already held (not_held).",
    ["outcome"],
)


# The HTTP metrics, with the names, labels and buckets of prometheus-fastapi-instrumentator's
# default set (dashboards written for it work unchanged), defined here so that the fast lane and
# the instrumentator's middleware record into the same series through one cheap call.
HTTP_REQUESTS = Counter(
    "http_requests", "Total number of requests by method, status and handler.",
    ["method", "status", "handler"],
)  # fmt: skip
HTTP_REQUEST_SIZE = Summary(
    "http_request_size_bytes",
    "Content length of incoming requests by handler. Only value of header is respected.",
    ["handler"],
)
HTTP_RESPONSE_SIZE = Summary(
    "http_response_size_bytes",
    "Content length of outgoing responses by handler. Only value of header is respected.",
    ["handler"],
)
HTTP_LATENCY_HIGHR = Histogram(
    "http_request_duration_highr_seconds",
    "Latency with many buckets but no API specific labels.",
    buckets=(0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5,
             5, 7.5, 10, 30, 60),
)  # fmt: skip
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "Latency with only few buckets by handler.",
    ["method", "handler"],
    buckets=(0.1, 0.5, 1),
)


@functools.lru_cache(maxsize=1024)
def _http_series(method: str, status: str, handler: str) -> tuple[Any, Any, Any, Any]:
    # prometheus_client's labels() costs a few microseconds a call: look each series up once.
    return (
        HTTP_REQUESTS.labels(method, status, handler),
        HTTP_REQUEST_SIZE.labels(handler),
        HTTP_RESPONSE_SIZE.labels(handler),
        HTTP_LATENCY.labels(method, handler),
    )


def observe_http(
    method: str, handler: str, status: str, received: int, sent: int, seconds: float
) -> None:
    """Record one finished request (``status`` grouped as ``2xx``, ``4xx``, ...)."""
    requests, received_bytes, sent_bytes, latency = _http_series(method, status, handler)
    requests.inc()
    received_bytes.observe(received)
    sent_bytes.observe(sent)
    latency.observe(seconds)
    HTTP_LATENCY_HIGHR.observe(seconds)


def http_instrumentation(info: http_metrics.Info) -> None:
    """The instrumentator's instrumentation function: :func:`observe_http` for its requests."""
    response = info.response
    observe_http(
        info.method,
        info.modified_handler,
        info.modified_status,
        int(info.request.headers.get("Content-Length", 0)),
        int(response.headers.get("Content-Length", 0)) if response is not None else 0,
        info.modified_duration,
    )


def multiprocess_dir() -> str | None:
    """The directory of the multiprocess samples, when this server runs in that mode."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def forget_dead_workers() -> None:
    """Mark dead the workers whose live-gauge files remain but whose process is gone (a worker
    that crashed, which uvicorn then replaced): called when a worker starts."""
    directory = multiprocess_dir()
    if directory is None:
        return
    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            worker_exited(int(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_exited(pid: int | None = None) -> None:
    """Mark this worker (or ``pid``) dead in multiprocess mode: its live gauges go away."""
    directory = multiprocess_dir()
    if directory is not None:
        multiprocess.mark_process_dead(pid if pid is not None else os.getpid(), directory)  # type: ignore[no-untyped-call]
