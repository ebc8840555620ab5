"""The API's own Prometheus metrics, each defined once with one label set.

HTTP metrics (requests, latency by route and status) are the set prometheus-fastapi-instrumentator
defines by default, recorded by its middleware and by the fast lane; ``/metrics`` exposes all.
With several uvicorn workers each process counts its own (set ``PROMETHEUS_MULTIPROC_DIR`` to
aggregate them).
"""

from __future__ import annotations

import functools
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, Summary
from prometheus_fastapi_instrumentator import metrics as http_metrics

MODEL_LOADS = Counter(
    "carprice_model_loads",
    "Model versions loaded, by outcome: ok (smoke-tested and in use) or failed (rejected).",
    ["outcome"],
)
MODEL_READY = Gauge(
    "carprice_model_ready", "1 while a production model is loaded and smoke-tested, else 0."
)
MODEL_VERSION = Gauge("carprice_model_version", "Registry version of the production model served.")
CACHE_EVENTS = Counter(
    "carprice_cache_events",
    "Prediction cache: hit and miss count rows; error counts failed cache calls; skipped "
    "counts calls not made because the circuit breaker is open.",
    ["event"],
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
