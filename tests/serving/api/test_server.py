"""``carprice serve`` for real, and the graceful shutdown that lets in-flight requests finish."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from carprice.cli import app as cli
from serving.main import create_app
from serving.settings import get_settings
from tests.serving.live import closed_port, live_server, wait_ready
from tests.serving.support import CAR, TEST_SECRET, ServingRegistry, make_settings

pytestmark = pytest.mark.timeout(120)  # a hang fails the test instead of the run


def test_graceful_shutdown_lets_an_in_flight_request_finish(registry: ServingRegistry) -> None:
    app = create_app(make_settings(registry))
    payload = json.dumps(CAR).encode()
    sent_first_part = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield payload[:20]
        sent_first_part.set()
        time.sleep(0.6)  # the shutdown starts while the body is still arriving
        yield payload[20:]

    with live_server(app, graceful=10) as server:
        result: dict[str, httpx.Response] = {}

        def request() -> None:
            result["response"] = httpx.post(
                f"{server.url}/v1/predict",
                content=slow_body(),
                headers={"Content-Type": "application/json", **server.headers},
                timeout=15,
            )

        client = threading.Thread(target=request)
        client.start()
        assert sent_first_part.wait(10)
        time.sleep(0.1)
        server.server.should_exit = True  # what SIGTERM and Ctrl-C do
        client.join(15)
        server.thread.join(15)
        assert not server.thread.is_alive()
    assert result["response"].status_code == 200, result["response"].text
    assert result["response"].json()["price"] > 0


def test_serve_refuses_a_bad_configuration_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (A missing JWT secret is not one: the API then starts, live and not ready.)
    monkeypatch.setenv("CARPRICE_SHUTDOWN_TIMEOUT", "soon")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["serve", "--port", str(closed_port())])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert result.output.startswith("configuration error: CARPRICE_SHUTDOWN_TIMEOUT: ")
    assert len(result.output.splitlines()) == 1


@pytest.mark.integration
def test_carprice_serve_runs_the_api_and_stops_cleanly_on_sigterm(
    registry: ServingRegistry, tmp_path: Path
) -> None:
    port = closed_port()
    env = os.environ | {
        "MLFLOW_TRACKING_URI": registry.uri,
        "CARPRICE_ENV": "test",
        "CARPRICE_JWT_SECRET": TEST_SECRET,
        "CARPRICE_RELOAD_INTERVAL": "1",
        "CARPRICE_DATABASE_URL": f"sqlite:///{tmp_path / 'users.db'}",
    }
    env.pop("CARPRICE_CACHE_URL", None)
    carprice = Path(sys.executable).with_name("carprice")
    # An operator's first steps: a user (password on stdin, never an argument), then a key.
    subprocess.run(
        [str(carprice), "users", "create", "app", "--role", "predict", "--password-stdin"],
        input="a-long-test-password\n",
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    key = subprocess.run(
        [str(carprice), "keys", "create", "--user", "app"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen(
        [str(carprice), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, timeout=120)
        headers = {"X-Request-ID": "cli-1", "X-API-Key": key}
        r = httpx.post(f"{url}/v1/predict", json=CAR, headers=headers, timeout=10)
        assert r.status_code == 200, r.text
        assert httpx.get(f"{url}/docs", timeout=10).status_code == 200
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal (the conventional status).
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log.seek(0)
    lines = [json.loads(line) for line in log if line.startswith("{")]
    access = [line for line in lines if line.get("logger") == "serving.access_log"]
    assert any(a["request_id"] == "cli-1" and a["status"] == 200 for a in access)
    assert any(a.get("model_version") == "1" for a in access)
    assert any("Uvicorn running" in line["message"] for line in lines)  # uvicorn's logs too
    assert any(line["message"] == "stopped" for line in lines)  # the lifespan closed
    assert any(line["message"] == "Application shutdown complete." for line in lines)
