"""Moving the alias on a running server: new versions swap in, broken ones are refused, and
no request fails meanwhile (real server, concurrent clients)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
import pytest

from serving.main import create_app
from tests.serving.live import LiveServer, live_server
from tests.serving.support import ServingRegistry, cars, make_settings

pytestmark = pytest.mark.timeout(120)  # a hang fails the test instead of the run

# The load clients are one principal sending as fast as the server answers (thousands of
# requests a minute): a limit that lets them, as a deployment would give a load generator.
LOAD_RATE_LIMIT = "1000000/minute"


@dataclass
class Load:
    """Clients posting cars in a loop; what each got, in order."""

    results: dict[int, list[tuple[int, str | None]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def versions(self) -> set[str | None]:
        return {v for rs in self.results.values() for _, v in rs}

    def statuses(self) -> set[int]:
        return {s for rs in self.results.values() for s, _ in rs}

    def total(self) -> int:
        return sum(len(rs) for rs in self.results.values())


@contextmanager
def load(server: LiveServer, clients: int = 4) -> Iterator[Load]:
    pool = cars(300, seed=41)
    stop = threading.Event()
    state = Load()

    def client(i: int) -> None:
        out = state.results.setdefault(i, [])
        with httpx.Client(base_url=server.url, headers=server.headers, timeout=15) as http:
            n = i * 1000
            while not stop.is_set():
                n += 1
                path = "/v2/health/ready" if n % 10 == 0 else "/v1/predict"
                try:
                    if path == "/v1/predict":
                        r = http.post(path, json=pool[n % len(pool)])
                        out.append((r.status_code, r.json().get("model_version")))
                    else:
                        out.append((http.get(path).status_code, None))
                except Exception as exc:  # every failure counts, whatever it is
                    state.errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        yield state
    finally:
        stop.set()
        for t in threads:
            t.join(20)


def wait_for(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_promoted_version_is_served_without_restart_or_a_failed_request(
    registry: ServingRegistry,
) -> None:
    app = create_app(make_settings(registry, reload_interval=0.1, rate_limit=LOAD_RATE_LIMIT))
    with live_server(app) as server, load(server) as running:
        wait_for(lambda: running.total() > 20)
        registry.set_alias("2")
        wait_for(lambda: "2" in running.versions())
        seen = running.total()
        wait_for(lambda: running.total() > seen + 20)
    assert running.errors == []
    assert running.statuses() == {200}
    assert running.versions() == {None, "1", "2"}
    for results in running.results.values():
        versions = [v for _, v in results if v is not None]
        # Each client sees 1 until the swap, then 2 only: the swap is atomic.
        assert versions == sorted(versions), versions
        assert versions[-1] == "2"


def test_broken_versions_are_refused_while_the_old_one_keeps_serving(
    registry: ServingRegistry,
) -> None:
    app = create_app(make_settings(registry, reload_interval=0.1, rate_limit=LOAD_RATE_LIMIT))
    with live_server(app) as server, load(server) as running:
        models = app.state.models
        wait_for(lambda: running.total() > 20)
        for broken in ("3", "4", "5"):
            registry.set_alias(broken)
            wait_for(lambda b=broken: f"car-price/{b} was rejected" in models.status)  # type: ignore[misc]
            seen = running.total()
            wait_for(lambda s=seen: running.total() > s + 10)  # type: ignore[misc]
            assert running.versions() == {None, "1"}
        registry.set_alias("2")  # the poller still works after the rejections
        wait_for(lambda: "2" in running.versions())
    assert running.errors == []
    assert running.statuses() == {200}  # predictions and readiness alike
