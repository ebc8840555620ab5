"""Every prediction logged (/v1, the fast lane, /v2); ``POST /v1/feedback``: round trip, errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serving.main import create_app
from serving.store import predictions
from serving.store.predictions import Window
from tests.serving.live import BlackHole
from tests.serving.support import (
    ServingRegistry,
    cars,
    error_of,
    make_settings,
    running,
    unique_car,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def served(registry: ServingRegistry) -> Iterator[tuple[FastAPI, TestClient]]:
    app = create_app(make_settings(registry, prediction_log_flush_interval=0.02, batch_max=50))
    with running(app) as client:
        yield app, client


def logged(app: FastAPI, request_ids: set[str], timeout: float = 10) -> Any:
    """The log rows of ``request_ids`` once they are all written."""
    deadline = time.monotonic() + timeout
    while True:
        df = predictions.window(app.state.prediction_log.engine, Window())
        df = df[df.request_id.isin(request_ids)]
        if set(df.request_id) == request_ids or time.monotonic() > deadline:
            return df
        time.sleep(0.02)


def test_every_api_version_logs_one_row_per_car(served: tuple[FastAPI, TestClient]) -> None:
    app, client = served
    one = client.post("/v1/predict", json=unique_car(), headers={"X-Request-ID": "fb-one"})
    batch = client.post("/v1/predict/batch", json=cars(5), headers={"X-Request-ID": "fb-batch"})
    assert one.status_code == batch.status_code == 200
    infer = {
        "inputs": [
            {"name": k, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else "FP64"}
            | {"data": [v]}
            for k, v in unique_car().items()
        ]
    }
    v2 = client.post("/v2/models/car-price/infer", json=infer, headers={"X-Request-ID": "fb-v2"})
    assert v2.status_code == 200, v2.text
    df = logged(app, {"fb-one", "fb-batch", "fb-v2"})
    assert sorted(df[df.request_id == "fb-batch"].row) == [0, 1, 2, 3, 4]
    assert df[df.request_id == "fb-batch"].price.tolist() == batch.json()["prices"]
    assert set(df[df.request_id == "fb-v2"].api_version) == {"v2"}
    first = df[df.request_id == "fb-one"].iloc[0]
    assert (first.api_version, first.model_version, first.price) == (
        "v1",
        "1",
        one.json()["price"],
    )
    assert first.caller.startswith("key:")  # the key's id, never the key


def test_feedback_round_trip_and_its_errors(served: tuple[FastAPI, TestClient]) -> None:
    app, client = served
    client.post("/v1/predict/batch", json=cars(3), headers={"X-Request-ID": "fb-rt"})
    logged(app, {"fb-rt"})
    ok = client.post("/v1/feedback", json={"request_id": "fb-rt", "actual_price": 9100})
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"recorded": 1}
    many = client.post(
        "/v1/feedback",
        json=[
            {"request_id": "fb-rt", "row": 1, "actual_price": 9200.5},
            {"request_id": "fb-rt", "row": 2, "actual_price": 9300.0},
        ],
    )
    assert many.json() == {"recorded": 2}
    again = error_of(
        client.post("/v1/feedback", json={"request_id": "fb-rt", "row": 1, "actual_price": 1.0}),
        409,
        "feedback_exists",
    )
    assert "'fb-rt' row 1" in again["message"]
    unknown = error_of(
        client.post(
            "/v1/feedback",
            json=[
                {"request_id": "fb-rt", "row": 7, "actual_price": 1.0},
                {"request_id": "nope", "actual_price": 1.0},
            ],
        ),
        404,
        "unknown_prediction",
    )
    assert "'fb-rt' row 7" in unknown["message"]
    assert "'nope' row 0" in unknown["message"]
    df = logged(app, {"fb-rt"})
    assert df.sort_values("row").actual_price.tolist() == [9100.0, 9200.5, 9300.0]


@pytest.mark.parametrize(
    "body",
    [
        {"request_id": "x", "actual_price": 0},
        {"request_id": "x", "actual_price": -5.5},
        {"request_id": "x", "actual_price": "12"},
        {"request_id": "x", "row": -1, "actual_price": 5},
        {"request_id": "", "actual_price": 5},
        {"request_id": "x", "actual_price": 5, "extra": 1},
        [],
        [{"request_id": "x", "actual_price": 5}] * 51,  # over the batch limit
    ],
)
def test_invalid_feedback_is_a_422(served: tuple[FastAPI, TestClient], body: Any) -> None:
    _, client = served
    error_of(client.post("/v1/feedback", json=body), 422)


@pytest.mark.parametrize("price", [b"NaN", b"Infinity", b"1e400"])
def test_a_non_finite_price_is_a_422(served: tuple[FastAPI, TestClient], price: bytes) -> None:
    _, client = served
    r = client.post(
        "/v1/feedback",
        content=b'{"request_id": "x", "actual_price": ' + price + b"}",
        headers={"Content-Type": "application/json"},
    )
    error_of(r, 422)


def test_feedback_needs_the_predict_role(served: tuple[FastAPI, TestClient]) -> None:
    _, client = served
    r = client.post(
        "/v1/feedback", json={"request_id": "x", "actual_price": 5}, headers={"X-API-Key": ""}
    )
    error_of(r, 401)


def test_feedback_is_documented(served: tuple[FastAPI, TestClient]) -> None:
    _, client = served
    op = client.get("/openapi.json").json()["paths"]["/v1/feedback"]["post"]
    assert {"200", "404", "409", "422", "503"} <= set(op["responses"])
    assert "first report stays" in op["responses"]["409"]["description"]
    one_or_many = op["requestBody"]["content"]["application/json"]["schema"]["anyOf"]
    many = next(s for s in one_or_many if s.get("type") == "array")
    assert (many["minItems"], many["maxItems"]) == (1, 50)  # the app's batch_max


def test_a_log_database_that_never_answers_costs_predictions_nothing(
    registry: ServingRegistry,
) -> None:
    hole = BlackHole()
    try:
        settings = make_settings(
            registry,
            prediction_log_url=f"postgresql+psycopg://nobody@127.0.0.1:{hole.port}/log",
            prediction_log_queue_max=3,
            prediction_log_timeout=1,
            shutdown_timeout=1,  # the queue cannot be written: do not wait for it
        )
        app = create_app(settings)
        with running(app) as client:
            started = time.perf_counter()
            for _ in range(6):
                assert client.post("/v1/predict", json=unique_car()).status_code == 200
            assert time.perf_counter() - started < 5
            assert app.state.prediction_log.dropped == 3  # 3 queued, 3 dropped and counted
            assert "carprice_prediction_log_rows_dropped_total" in client.get("/metrics").text
            unavailable = client.post("/v1/feedback", json={"request_id": "x", "actual_price": 1})
            error_of(unavailable, 503, "prediction_log_unavailable")
    finally:
        hole.close()
