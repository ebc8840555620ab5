"""A health probe for another process: only the standard library, so a spawned process starts
in a fraction of a second even on a loaded machine (the test modules import pandas and MLflow)."""

from __future__ import annotations

import http.client
import time
from typing import Any


def poll(port: int, ready: Any, stop: Any, out: Any) -> None:
    """GET /v2/health/live on a new connection every 10 ms until ``stop``; latencies to ``out``."""
    latencies = []
    ready.set()
    while not stop.is_set():
        started = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/v2/health/live")
        status = conn.getresponse().status
        conn.close()
        latencies.append(time.perf_counter() - started if status == 200 else float("inf"))
        stop.wait(0.01)
    out.put(latencies)
