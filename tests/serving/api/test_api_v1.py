"""/v1 over HTTP (TestClient): predictions, the model list, and every error case."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serving.main import create_app
from tests.serving.support import (
    CAR,
    OPTIONAL,
    REQUIRED,
    ServingRegistry,
    cars,
    error_of,
    make_settings,
    running,
    unique_car,
)

pytestmark = pytest.mark.timeout(120)  # a hang fails the test instead of the run


def test_one_car_gets_a_price_with_the_model_that_made_it(client: TestClient) -> None:
    r = client.post("/v1/predict", json=unique_car())
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"price", "model_name", "model_version", "cached", "request_id"}
    assert body["price"] > 0
    assert body["model_name"] == "car-price"
    assert body["model_version"] == "1"
    assert body["cached"] is False
    assert r.headers["X-Request-ID"] == body["request_id"]


def test_the_same_car_again_comes_from_the_cache_with_the_same_price(client: TestClient) -> None:
    car = unique_car()
    first = client.post("/v1/predict", json=car).json()
    second = client.post("/v1/predict", json=car).json()
    assert (first["cached"], second["cached"]) == (False, True)
    assert second["price"] == first["price"]


def test_optional_columns_may_be_null_or_absent(client: TestClient) -> None:
    minimal = {k: v for k, v in unique_car().items() if k in REQUIRED}
    nulls = minimal | dict.fromkeys(OPTIONAL)
    a = client.post("/v1/predict", json=minimal)
    b = client.post("/v1/predict", json=nulls)
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    assert a.json()["price"] == b.json()["price"]
    assert b.json()["cached"] is True  # absent and null are the same car


def test_whole_number_floats_are_accepted_for_integer_fields(client: TestClient) -> None:
    as_floats = CAR | {"year": 2019.0, "km_driven": 45000.0, "doors": 4.0}
    r = client.post("/v1/predict", json=as_floats)
    assert r.status_code == 200, r.text
    assert r.json()["price"] == client.post("/v1/predict", json=CAR).json()["price"]


def test_an_unknown_brand_is_priced_not_refused(client: TestClient) -> None:
    r = client.post("/v1/predict", json=CAR | {"brand": "Zastava", "model": "Yugo"})
    assert r.status_code == 200, r.text
    assert r.json()["price"] > 0


def test_newer_car_costs_more_all_else_equal(client: TestClient) -> None:
    old = client.post("/v1/predict", json=CAR | {"year": 2008}).json()["price"]
    new = client.post("/v1/predict", json=CAR | {"year": 2023}).json()["price"]
    assert new > old


def test_batch_prices_every_car_in_order_and_matches_single_predictions(
    client: TestClient,
) -> None:
    batch = cars(40)
    r = client.post("/v1/predict/batch", json=batch)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"prices", "model_name", "model_version", "request_id"}
    assert body["model_version"] == "1"
    assert len(body["prices"]) == len(batch)
    singles = [client.post("/v1/predict", json=car).json() for car in batch[:5]]
    assert all(s["cached"] for s in singles)  # the batch wrote every row to the cache
    assert [s["price"] for s in singles] == body["prices"][:5]


def test_a_batch_mixing_cached_and_new_cars_prices_all_of_them(client: TestClient) -> None:
    batch = cars(20, seed=8)
    expected = client.post("/v1/predict/batch", json=batch).json()["prices"]
    fresh = cars(10, seed=9)
    mixed = [fresh[0], batch[3], fresh[1], batch[7], *fresh[2:]]
    prices = client.post("/v1/predict/batch", json=mixed).json()["prices"]
    assert prices[1] == expected[3]
    assert prices[3] == expected[7]
    assert len(prices) == len(mixed)


def test_batch_size_is_limited_by_settings(registry: ServingRegistry) -> None:
    app = create_app(make_settings(registry, batch_max=5))
    with running(app) as client:
        assert client.post("/v1/predict/batch", json=[CAR] * 5).status_code == 200
        r = client.post("/v1/predict/batch", json=[CAR] * 6)
        assert r.status_code == 422
        assert error_of(r, 422, "limit_exceeded")["message"].count("at most 5") == 1
        empty = client.post("/v1/predict/batch", json=[])
        assert empty.status_code == 422


def test_models_lists_versions_with_aliases_and_metrics(client: TestClient) -> None:
    r = client.get("/v1/models")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["name"] == "car-price"
    assert body["alias"] == "production"
    assert body["serving_version"] == "1"
    versions = {v["version"]: v for v in body["versions"]}
    assert list(versions) == ["5", "4", "3", "2", "1"]
    assert versions["1"]["aliases"] == ["production"]
    assert versions["1"]["serving"] is True
    assert versions["2"]["serving"] is False
    assert versions["1"]["metrics"]["holdout_mae"] == 1234.5
    assert versions["1"]["status"] == "READY"
    assert versions["1"]["created_at"]


def test_request_id_is_taken_from_the_client_and_returned(client: TestClient) -> None:
    r = client.post("/v1/predict", json=CAR, headers={"X-Request-ID": "order-42.a"})
    assert r.headers["X-Request-ID"] == "order-42.a"
    assert r.json()["request_id"] == "order-42.a"
    bad = client.post("/v1/predict", json=CAR, headers={"X-Request-ID": "x" * 500})
    assert bad.headers["X-Request-ID"] != "x" * 500
    assert len(bad.headers["X-Request-ID"]) == 32


# --- errors ---


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("year", 1989),
        ("year", 2027),
        ("year", 2019.5),
        ("km_driven", -1),
        ("km_driven", 1_000_001),
        ("engine_cc", 100),
        ("max_power_bhp", 5000.0),
        ("mileage_kmpl", 0.5),
        ("seats", 12),
        ("torque_nm", 10.0),
        ("doors", 7),
        ("year", "2019"),
        ("doors", True),
        ("brand", ""),
        ("brand", "   "),
        ("brand", "B" * 65),
        ("brand", "Toy\x00ota"),  # a NUL: PostgreSQL text (the prediction log) cannot hold it
        ("color", "\x00"),
        ("brand", None),
        ("brand", 7),
        ("year", None),
    ],
)
def test_invalid_field_is_a_422_naming_the_field(
    client: TestClient, field: str, value: Any
) -> None:
    error = error_of(client.post("/v1/predict", json=CAR | {field: value}), 422, "invalid_request")
    assert [d["loc"] for d in error["details"]] == [f"body.{field}"]
    assert field in error["message"]


@pytest.mark.parametrize("others", [0, 5])  # 5 valid cars: the column-wise path
def test_a_nul_in_a_category_of_a_batch_is_a_422_naming_the_car_and_field(
    client: TestClient, others: int
) -> None:
    batch = [CAR] * others + [CAR | {"model": "Corolla\x00"}]
    error = error_of(client.post("/v1/predict/batch", json=batch), 422, "invalid_request")
    assert [d["loc"] for d in error["details"]] == [f"body.{others}.model"]
    assert "NUL" in error["message"]


def test_the_openapi_pattern_of_a_category_refuses_a_nul(client: TestClient) -> None:
    car = client.get("/openapi.json").json()["components"]["schemas"]["Car"]["properties"]
    pattern = re.compile(car["brand"]["pattern"])
    assert pattern.search("Toyota")
    assert pattern.search(" Toyota ")
    assert not pattern.search("Toy\x00ota")
    assert not pattern.search("  ")


def test_missing_required_field_and_unknown_field_are_named(client: TestClient) -> None:
    car = {k: v for k, v in CAR.items() if k != "km_driven"} | {"colour": "Red"}
    error = error_of(client.post("/v1/predict", json=car), 422)
    locs = {d["loc"]: d["type"] for d in error["details"]}
    assert locs == {"body.km_driven": "missing", "body.colour": "extra_forbidden"}


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_and_infinity_are_422(client: TestClient, literal: str) -> None:
    body = json.dumps(CAR).replace('"max_power_bhp": 121.0', f'"max_power_bhp": {literal}')
    assert literal in body or "1e999" in body
    r = client.post("/v1/predict", content=body, headers={"Content-Type": "application/json"})
    # Not JSON (RFC 8259 has no NaN or Infinity, and 1e999 is no double): refused by the parser.
    error_of(r, 422, "invalid_json")


def test_a_huge_invalid_input_is_not_echoed_back(client: TestClient) -> None:
    huge = "x" * 1_000  # within the JSON string limit, 15x the category limit
    r = client.post("/v1/predict", json=CAR | {"model": huge, huge: 1})
    error = error_of(r, 422)
    assert len(r.content) < 3_000
    assert huge[:1000] not in r.text
    assert error["details"]


def test_many_invalid_rows_give_a_bounded_error_naming_the_first(client: TestClient) -> None:
    # Validation stops at the first bad car: a refusal costs one car's errors, not 500.
    r = client.post("/v1/predict/batch", json=[CAR] * 3 + [CAR | {"year": 1800}] * 500)
    error = error_of(r, 422, "invalid_request")
    assert [d["loc"] for d in error["details"]] == ["body.3.year"]
    assert len(r.content) < 4_000


@pytest.mark.parametrize(
    "body",
    [b"{", b"not json", b'{"brand": "Toyota",}', b"[1, 2", b'"just a string"', b"[]", b"null"],
)
def test_malformed_or_wrongly_shaped_bodies_are_4xx_never_500(
    client: TestClient, body: bytes
) -> None:
    r = client.post("/v1/predict", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    error_of(r, 422)


def test_a_deeply_nested_or_overlong_number_is_a_clienterror_of(client: TestClient) -> None:
    nested = b"[" * 100_000 + b"]" * 100_000
    long_int = b'{"year": ' + b"9" * 5000 + b"}"
    for body in (long_int,):
        r = client.post("/v1/predict", content=body, headers={"Content-Type": "application/json"})
        assert 400 <= r.status_code < 500, r.text
    r = client.post(
        "/v1/predict", content=nested[:900_000], headers={"Content-Type": "application/json"}
    )
    assert 400 <= r.status_code < 500


def test_a_body_that_is_not_json_is_415(client: TestClient) -> None:
    r = client.post("/v1/predict", content=json.dumps(CAR), headers={"Content-Type": "text/plain"})
    error = error_of(r, 415, "unsupported_media_type")
    assert "application/json" in error["message"]


def test_a_json_body_without_content_type_is_accepted(client: TestClient) -> None:
    r = client.post("/v1/predict", content=json.dumps(CAR).encode())
    assert r.status_code == 200, r.text


def test_body_over_the_limit_is_413_with_content_length(registry: ServingRegistry) -> None:
    app = create_app(make_settings(registry, max_body_bytes=4096))
    with running(app) as client:
        r = client.post("/v1/predict/batch", json=[CAR] * 100)
        error_of(r, 413, "payload_too_large")
        assert client.post("/v1/predict/batch", json=[CAR] * 5).status_code == 200


def test_one_car_and_a_login_form_have_the_small_body_limit(client: TestClient) -> None:
    padded = json.dumps(CAR, indent=2).encode() + b" " * 17_000  # valid JSON, 17 KB
    r = client.post("/v1/predict", content=padded, headers={"Content-Type": "application/json"})
    error = error_of(r, 413, "payload_too_large")
    assert "limit of 16384 bytes" in error["message"]
    # Within CARPRICE_MAX_BODY_BYTES: answered, and the rest drained rather than the connection
    # reset (the client reads the 413 naming the limit).
    assert "close" not in r.headers.get("connection", "")
    login = client.post("/v1/auth/token", data={"username": "ann", "password": "x" * 20_000})
    error_of(login, 413, "payload_too_large")
    # A list of cars has the large limit: 100 cars, ~36 KB.
    assert client.post("/v1/predict/batch", json=[CAR] * 100).status_code == 200


def test_body_over_the_limit_is_413_without_content_length(registry: ServingRegistry) -> None:
    app = create_app(make_settings(registry, max_body_bytes=4096))
    chunk = json.dumps([CAR] * 10).encode()

    def stream() -> Iterator[bytes]:  # a generator body is sent chunked, without Content-Length
        yield chunk[:-1]
        for _ in range(50):
            yield b"," + chunk[1:-1]
        yield b"]"

    with running(app) as client:
        r = client.post("/v1/predict/batch", content=stream())
        error_of(r, 413, "payload_too_large")


def test_unknown_route_and_wrong_method_use_the_error_shape(client: TestClient) -> None:
    error_of(client.get("/v1/nothing"), 404, "not_found")
    error_of(client.get("/v1/predict"), 405, "method_not_allowed")


def test_503_with_a_clear_message_while_no_model_is_ready(registry: ServingRegistry) -> None:
    app = create_app(make_settings(registry, model_alias="does-not-exist"))
    with running(app, ready=False) as client:
        error = error_of(client.post("/v1/predict", json=CAR), 503, "model_not_ready")
        assert "does-not-exist" in error["message"]
        assert client.post("/v1/predict/batch", json=[CAR]).status_code == 503
        assert client.get("/v2/health/ready").status_code == 503
        assert client.get("/v2/health/live").status_code == 200
        # The registry still answers: the versions can be listed.
        assert client.get("/v1/models").json()["serving_version"] is None


def test_the_docs_describe_both_versions(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {
        "/v1/predict",
        "/v1/predict/batch",
        "/v1/models",
        "/v2/models/{model_name}/infer",
    } <= set(spec["paths"])
    car = spec["components"]["schemas"]["Car"]
    assert car["properties"]["year"]["minimum"] == 1990
    assert set(car["required"]) == set(REQUIRED)


def test_metrics_expose_model_loads_readiness_and_cache_events(registry: ServingRegistry) -> None:
    # Its own app: the gauges are process-wide, and an app another test stopped sets them to 0.
    with running(create_app(make_settings(registry))) as client:
        client.post("/v1/predict", json=unique_car())
        text = client.get("/metrics").text
    for series in (
        'carprice_model_loads_total{kind="initial",outcome="ok",reason=""}',
        'carprice_model_info{model_name="car-price",model_version="1"} 1.0',
        'carprice_predictions_total{api_version="v1",cached="false",model_version="1"}',
        "carprice_model_ready 1.0",
        "carprice_model_version 1.0",
        'carprice_cache_events_total{event="miss"}',
        "http_requests_total",
    ):
        assert series in text
