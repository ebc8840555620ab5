"""The API's own Prometheus metrics, each defined once with one label set.

HTTP metrics (requests, latency by route and status) come from
prometheus-fastapi-instrumentator; ``/metrics`` exposes both. With several uvicorn workers each
process counts its own (set ``PROMETHEUS_MULTIPROC_DIR`` to aggregate them).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram
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


@functools.cache
def http_instrumentation() -> Callable[[http_metrics.Info], None]:
    """The instrumentator's default HTTP metrics (``http_requests_total``, latency and size by
    handler), created once per process: the instrumentator's middleware and the fast lane
    (:mod:`serving.fastlane`) both record into them."""
    instrumentation = http_metrics.default()
    if instrumentation is None:  # its collectors exist already, created by someone else
        raise RuntimeError("the HTTP metrics are already registered in this process")
    return instrumentation
