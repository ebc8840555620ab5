"""Request ids, the JSON access log, the last-resort 500, and the body limit on a real socket."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serving.api.deps import get_prediction_service
from serving.main import create_app
from serving.monitoring import request_context
from serving.monitoring.logs import JsonFormatter
from tests.serving.live import LiveServer, live_server
from tests.serving.support import CAR, ServingRegistry, error_of, make_settings, running, unique_car

pytestmark = pytest.mark.timeout(120)  # a hang fails the test instead of the run


def test_every_request_is_logged_once_with_id_status_latency_and_model_version(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="serving.access_log"):
        r = client.post("/v1/predict", json=unique_car(), headers={"X-Request-ID": "abc-1"})
        client.get("/v2/health/live")
    records = [rec for rec in caplog.records if rec.name == "serving.access_log"]
    assert len(records) == 2
    fields = records[0].fields  # type: ignore[attr-defined]
    assert fields["status"] == 200
    assert fields["method"] == "POST"
    assert fields["path"] == "/v1/predict"
    assert fields["model_version"] == r.json()["model_version"] == "1"
    assert fields["latency_ms"] > 0
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["request_id"] == "abc-1"  # the context was still current when it was logged
    assert line["status"] == 200
    assert records[1].fields["model_version"] is None  # type: ignore[attr-defined]


def test_json_formatter_carries_the_request_id_and_the_exception() -> None:
    record = logging.LogRecord("serving.x", logging.ERROR, __file__, 1, "boom %s", ("!",), None)
    try:
        raise ValueError("inner")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    token = request_context.activate(request_context.RequestContext("rid-9"))
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_context.deactivate(token)
    assert line["message"] == "boom !"
    assert line["level"] == "ERROR"
    assert line["request_id"] == "rid-9"
    assert "ValueError: inner" in line["exception"]


class Boom:
    async def predict(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")


def test_an_unexpected_exception_is_a_logged_500_in_the_error_shape(
    registry: ServingRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(make_settings(registry))
    app.dependency_overrides[get_prediction_service] = lambda: Boom()
    with running(app) as client, caplog.at_level(logging.ERROR):
        r = client.post("/v1/predict", json=CAR, headers={"X-Request-ID": "bug-1"})
    error = error_of(r, 500, "internal_error")
    assert "a bug" not in error["message"]  # internals stay in the log
    assert r.headers["X-Request-ID"] == "bug-1"
    assert any("a bug" in (rec.exc_text or "") or rec.exc_info for rec in caplog.records)


@pytest.fixture(scope="module")
def small_limit_server(registry: ServingRegistry) -> Iterator[LiveServer]:
    app: FastAPI = create_app(make_settings(registry, max_body_bytes=4096))
    with live_server(app) as server:
        yield server


def _raw(port: int, head: bytes, body: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head + body)
        return sock.recv(65536)


def test_a_chunked_body_is_cut_off_at_the_limit_without_waiting_for_the_rest(
    small_limit_server: LiveServer,
) -> None:
    head = (
        b"POST /v1/predict/batch HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"X-API-Key: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
    ) % small_limit_server.headers["X-API-Key"].encode()
    chunk = b"[" + b" " * 5000
    # The terminating chunk is never sent: the answer must come anyway.
    response = _raw(small_limit_server.port, head, b"%x\r\n%s\r\n" % (len(chunk), chunk))
    status_line, _, rest = response.partition(b"\r\n")
    assert b" 413 " in status_line
    assert b"payload_too_large" in rest


def test_a_declared_length_over_the_limit_is_refused_before_the_body(
    small_limit_server: LiveServer,
) -> None:
    head = (
        b"POST /v2/models/car-price/infer HTTP/1.1\r\nHost: test\r\n"
        b"Content-Length: 10000000000\r\n\r\n"
    )
    response = _raw(small_limit_server.port, head)
    assert b" 413 " in response.partition(b"\r\n")[0]


def test_a_body_within_the_limit_is_served(small_limit_server: LiveServer) -> None:
    import httpx

    r = httpx.post(
        f"{small_limit_server.url}/v1/predict",
        json=CAR,
        headers=small_limit_server.headers,
        timeout=10,
    )
    assert r.status_code == 200, r.text


def test_new_request_ids_are_32_hex_digits_in_the_order_they_were_made() -> None:
    import time

    from serving.monitoring.request_context import new_request_id, request_id_from

    ids = []
    for _ in range(50):
        ids.append(new_request_id())
        time.sleep(0.002)  # a new millisecond: ids of one millisecond are in random order
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert ids == sorted(ids)
    assert len({new_request_id() for _ in range(10_000)}) == 10_000
    assert request_id_from("abc-1") == "abc-1"  # a client's own id is kept
    assert len(request_id_from("bad id!")) == 32
