"""The API with Redis as its cache: hits, keys per model version, and Redis failing
(stopped, or accepting connections and never answering) without failing a request."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from serving.inference.features import make_row, row_digest
from serving.main import create_app
from serving.monitoring.metrics import CACHE_EVENTS
from tests.serving.live import BlackHole, closed_port, live_server
from tests.serving.services import REDIS_URL
from tests.serving.support import (
    ServingRegistry,
    cars,
    make_settings,
    running,
    unique_car,
)

pytestmark = pytest.mark.timeout(120)  # a hang fails the test instead of the run


def eventually(check: Callable[[], bool], timeout: float = 10) -> None:
    """Wait for ``check()`` (Redis writes are sent behind the response)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not written to Redis in time"
        time.sleep(0.01)


def test_prices_are_cached_in_redis_under_the_model_version(
    registry: ServingRegistry, redis_db: redis.Redis[bytes], redis_namespace: str
) -> None:
    settings = make_settings(
        registry,
        cache_url=REDIS_URL,
        cache_namespace=redis_namespace,
        cache_ttl=120,
        reload_interval=0.1,
        redis_timeout=5,  # a loaded machine must not turn a slow answer into a miss
    )
    app = create_app(settings)
    car = unique_car()
    with running(app) as client:
        first = client.post("/v1/predict", json=car).json()
        second = client.post("/v1/predict", json=car).json()
        assert (first["cached"], second["cached"]) == (False, True)
        assert second["price"] == first["price"]
        key = f"{redis_namespace}car-price:1:{row_digest(make_row(car))}"
        eventually(lambda: redis_db.get(key) is not None)
        assert float(redis_db.get(key)) == first["price"]  # type: ignore[arg-type]
        assert 110 <= redis_db.ttl(key) <= 120

        registry.set_alias("2")
        models = app.state.models
        deadline = time.monotonic() + 60
        while models.require_production().version != "2":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        after = client.post("/v1/predict", json=car).json()
        assert after["model_version"] == "2"
        assert after["cached"] is False  # a new version never answers with an old price
        assert after["price"] != first["price"]
        eventually(lambda: bool(redis_db.exists(key.replace(":car-price:1:", ":car-price:2:"))))


def test_two_workers_share_prices_through_redis(
    registry: ServingRegistry, redis_db: redis.Redis[bytes], redis_namespace: str
) -> None:
    settings = make_settings(
        registry, cache_url=REDIS_URL, cache_namespace=redis_namespace, redis_timeout=5
    )
    car = unique_car()
    with running(create_app(settings)) as one, running(create_app(settings)) as two:
        first = one.post("/v1/predict", json=car).json()
        key = f"{redis_namespace}car-price:1:{row_digest(make_row(car))}"
        eventually(lambda: redis_db.get(key) is not None)
        second = two.post("/v1/predict", json=car).json()  # not in its own L1: from Redis
        assert (first["cached"], second["cached"]) == (False, True)
        assert second["price"] == first["price"]


def test_a_batch_writes_every_row_and_a_second_batch_reads_them_all(
    registry: ServingRegistry, redis_db: redis.Redis[bytes], redis_namespace: str
) -> None:
    settings = make_settings(
        registry, cache_url=REDIS_URL, cache_namespace=redis_namespace, redis_timeout=5
    )
    app = create_app(settings)
    batch = cars(200, seed=51)
    with running(app) as client:
        hits = CACHE_EVENTS.labels("hit")._value.get()
        first = client.post("/v1/predict/batch", json=batch).json()["prices"]
        eventually(lambda: len(redis_db.keys(f"{redis_namespace}car-price:1:*")) == len(batch))
        second = client.post("/v1/predict/batch", json=batch).json()["prices"]
        assert second == first
        assert CACHE_EVENTS.labels("hit")._value.get() - hits == len(batch)


def _timed_predictions(client: TestClient, n: int) -> list[float]:
    durations = []
    for _ in range(n):
        started = time.perf_counter()
        r = client.post("/v1/predict", json=unique_car())
        durations.append(time.perf_counter() - started)
        assert r.status_code == 200, r.text
        assert r.json()["cached"] is False
    return durations


def test_with_redis_stopped_predictions_succeed_uncached(registry: ServingRegistry) -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    errors = CACHE_EVENTS.labels("error")._value.get()
    app = create_app(make_settings(registry, cache_url=url, redis_timeout=0.1))
    with running(app) as client:
        durations = _timed_predictions(client, 10)
        assert client.get("/v2/health/ready").status_code == 200  # readiness ignores Redis
    assert max(durations) < 5, durations  # bounded by the 0.1 s timeout (slack for load)
    assert CACHE_EVENTS.labels("error")._value.get() - errors == 3  # then the breaker is open


@pytest.fixture
def black_hole() -> BlackHole:
    return BlackHole()


def test_with_redis_black_holed_latency_stays_bounded_under_concurrency(
    registry: ServingRegistry, black_hole: BlackHole
) -> None:
    url = f"redis://127.0.0.1:{black_hole.port}/0"
    settings = make_settings(
        registry, cache_url=url, redis_timeout=0.2, cache_breaker_failures=3, cache_breaker_reset=60
    )
    pool = cars(64, seed=52)
    try:
        with (
            live_server(create_app(settings)) as server,
            httpx.Client(base_url=server.url, headers=server.headers, timeout=10) as http,
        ):

            def call(car: dict[str, object]) -> tuple[int, float]:
                started = time.perf_counter()
                r = http.post("/v1/predict", json=car)
                return r.status_code, time.perf_counter() - started

            with concurrent.futures.ThreadPoolExecutor(16) as pool_exec:
                first = list(pool_exec.map(call, pool[:32]))
                connections = black_hole.connections
                later = list(pool_exec.map(call, pool[32:]))
        assert {s for s, _ in first + later} == {200}
        # Every request waited at most about one Redis timeout (read and write) on Redis.
        # (The bounds allow for a loaded machine: without the timeout a request would hang.)
        assert max(d for _, d in first) < 8, first
        # Once the breaker opened, Redis was not called any more.
        assert black_hole.connections == connections
        assert max(d for _, d in later) < 8, later
    finally:
        black_hole.close()
