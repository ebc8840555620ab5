"""/v1 over HTTP (TestClient): predictions, the model list, and every error case."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from serving.main import create_app
from tests.serving.conftest import CAR, REQUIRED, TestRegistry, cars, make_settings, running


def test_one_car_gets_a_price_with_the_model_that_made_it(client: TestClient) -> None:
    r = client.post("/v1/predict", json=CAR)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"price", "model_name", "model_version", "cached", "request_id"}
    assert body["price"] > 0
    assert body["model_name"] == "car-price"
    assert body["model_version"] == "1"
    assert body["cached"] is False
    assert r.headers["X-Request-ID"] == body["request_id"]
