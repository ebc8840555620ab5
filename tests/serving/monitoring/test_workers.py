"""``carprice serve --workers 2`` for real, logging into a real PostgreSQL: metrics that add up
across the workers in every scrape, and a SIGTERM under load after which every request that
got a 200 is in the prediction log, once.

One server for the module (two workers loading the model is the slow part); the SIGTERM test
stops it, so it runs last.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.store import predictions
from serving.store.database import create_db_engine, upgrade
from serving.store.predictions import Window
from tests.serving.live import closed_port, wait_ready
from tests.serving.services import postgres_database
from tests.serving.support import CAR, TEST_SECRET, ServingRegistry

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.timeout(240)]


@dataclass
class Served:
    url: str
    key: str
    proc: subprocess.Popen[bytes]
    log_url: str
    metrics_dir: Path


@pytest.fixture(scope="module")
def served(registry: ServingRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("workers")
    with postgres_database() as log_url:
        upgrade(log_url)
        port = closed_port()
        metrics_dir = tmp / "metrics"
        env = os.environ | {
            "MLFLOW_TRACKING_URI": registry.uri,
            "CARPRICE_ENV": "test",
            "CARPRICE_JWT_SECRET": TEST_SECRET,
            "CARPRICE_DATABASE_URL": f"sqlite:///{tmp / 'users.db'}",
            "CARPRICE_PREDICTION_LOG_URL": log_url,
            "CARPRICE_PREDICTION_LOG_FLUSH_INTERVAL": "0.05",
            "CARPRICE_RATE_LIMIT": "100000/minute",
            "CARPRICE_LOG_LEVEL": "WARNING",
            "CARPRICE_RELOAD_INTERVAL": "1",  # a first poll that timed out is retried soon
            "CARPRICE_REGISTRY_TIMEOUT": "60",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
        env.pop("CARPRICE_CACHE_URL", None)
        carprice = str(Path(sys.executable).with_name("carprice"))
        subprocess.run(
            [carprice, "users", "create", "app", "--role", "predict", "--password-stdin"],
            input=b"a-long-test-password\n",
            env=env,
            check=True,
            capture_output=True,
        )
        key = (
            subprocess.run(
                [carprice, "keys", "create", "--user", "app"],
                env=env,
                check=True,
                capture_output=True,
            )
            .stdout.decode()
            .strip()
        )
        metrics_dir.mkdir()
        (metrics_dir / "counter_999999.db").write_bytes(b"stale")  # a previous run's file
        proc = subprocess.Popen(
            [carprice, "serve", "--port", str(port), "--workers", "2"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(tmp / "serve.log").open("wb"),
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, timeout=180)
            _wait_both_workers_ready(url)
            yield Served(url, key, proc, log_url, metrics_dir)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _wait_both_workers_ready(url: str, timeout: float = 180) -> None:
    # Readiness is per worker; the gauge is the lowest of the live workers' (livemin), each
    # starting at 0: 1 means both have their model.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "carprice_model_ready 1.0" in httpx.get(f"{url}/metrics", timeout=5).text:
            return
        time.sleep(0.2)
    raise AssertionError("the workers did not become ready")


def _sum(text: str, family: str, **labels: str) -> float:
    total = 0.0
    for metric in text_string_to_metric_families(text):
        for sample in metric.samples:
            if sample.name == family and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


_ids = itertools.count()


def _unique_car() -> dict[str, object]:
    return CAR | {"km_driven": 200_000 + next(_ids)}


def test_every_scrape_shows_the_totals_of_both_workers(served: Served) -> None:
    assert not (served.metrics_dir / "counter_999999.db").exists()  # emptied at start
    headers = {"X-API-Key": served.key}
    before = httpx.get(f"{served.url}/metrics", timeout=5).text
    base = _sum(before, "http_requests_total", handler="/v1/predict")
    n = 60
    for i in range(n):
        # A new connection each time: uvicorn's workers share the socket, so both answer.
        car = CAR if i % 3 == 0 else _unique_car()
        r = httpx.post(f"{served.url}/v1/predict", json=car, headers=headers, timeout=10)
        assert r.status_code == 200, r.text
    pids = {p.stem.rsplit("_", 1)[-1] for p in served.metrics_dir.glob("counter_*.db")}
    assert len(pids) >= 2, "only one worker answered"
    for _ in range(8):
        text = httpx.get(f"{served.url}/metrics", timeout=5).text
        assert _sum(text, "http_requests_total", handler="/v1/predict") - base == n
        assert _sum(text, "carprice_predictions_total", api_version="v1") >= n
        assert _sum(text, "carprice_model_ready") == 1.0  # one series, not one per worker


def test_sigterm_under_load_logs_every_answered_request_once(served: Served) -> None:
    headers = {"X-API-Key": served.key}
    answered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(c: int) -> None:
        with httpx.Client(base_url=served.url, headers=headers, timeout=30) as http:
            for i in itertools.count():
                if stop.is_set():
                    return
                rid = f"drain-{c}-{i}"
                try:
                    r = http.post("/v1/predict", json=_unique_car(), headers={"X-Request-ID": rid})
                except httpx.HTTPError:
                    if stop.is_set() or served.proc.poll() is not None:
                        return
                    time.sleep(0.01)  # refused while shutting down: try again, then give up
                    continue
                if r.status_code == 200:
                    with lock:
                        answered.append(rid)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(20)]
    for t in threads:
        t.start()
    time.sleep(3)
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(timeout=60) in (0, -signal.SIGTERM)
    stop.set()
    for t in threads:
        t.join(30)
    assert len(answered) > 20
    engine = create_db_engine(served.log_url)
    try:
        df = predictions.window(engine, Window())
    finally:
        engine.dispose()
    drained = df[df.request_id.str.startswith("drain-")]
    assert sorted(drained.request_id) == sorted(answered)  # same set, each once
    assert not drained.duplicated(["request_id", "row"]).any()
