"""The fast lane answers exactly as the full FastAPI stack does.

Two apps on the same registry, one with the lane (the default) and one without
(``fast_lane=False``), get the same requests in the same order; status, body and headers must
agree. Counting ``carprice_fast_lane_requests`` shows which requests the lane answered itself,
so a lane that handed everything over could not pass.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import random
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from pydantic import TypeAdapter, ValidationError

from serving.access.principals import Role
from serving.api.deps import get_app_settings
from serving.api.schemas.v1 import Car, StrictCar
from serving.inference.features import make_row
from serving.main import create_app
from tests.serving.support import (
    CAR,
    ServingRegistry,
    cars,
    error_of,
    make_settings,
    running,
    unique_car,
)

PASSWORD = "a-long-test-password"
IGNORED_HEADERS = {"date", "server"}
_names = itertools.count()


def lane_count(outcome: str) -> float:
    value = REGISTRY.get_sample_value("carprice_fast_lane_requests_total", {"outcome": outcome})
    return value or 0.0


class Twin:
    """One side of the comparison: a running app and its credentials."""

    def __init__(self, app: FastAPI, client: TestClient) -> None:
        self.app = app
        self.client = client
        self.keys = {role: self._key(role) for role in ("predict", "admin")}
        self.token = self._token()

    def _key(self, role: str) -> str:
        name = f"lane{next(_names)}"
        accounts = self.app.state.access.accounts
        accounts.create_user(name, PASSWORD, Role(role))
        key: str = accounts.create_key(name, "tests").key
        return key

    def _token(self) -> str:
        name = f"lane{next(_names)}"
        self.app.state.access.accounts.create_user(name, PASSWORD, Role.PREDICT)
        r = self.client.post("/v1/auth/token", data={"username": name, "password": PASSWORD})
        assert r.status_code == 200, r.text
        token: str = r.json()["access_token"]
        return token

    def send(self, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        creds = {
            k: v.format(key=self.keys["predict"], admin=self.keys["admin"], token=self.token)
            for k, v in headers.items()
        }
        # Not the TestClient's default key: each case says which credentials it sends.
        request = self.client.build_request("POST", path, content=body, headers=creds)
        if "X-API-Key" not in creds:
            del request.headers["X-API-Key"]
        return self.client.send(request)


@pytest.fixture(scope="module")
def twins(registry: ServingRegistry) -> Iterator[tuple[Twin, Twin]]:
    """(with the lane, without it), same registry and settings otherwise."""
    settings = {"batch_max": 20, "rate_limit": "100000/minute"}
    lane_app = create_app(make_settings(registry, **settings))
    stack_app = create_app(make_settings(registry, fast_lane=False, **settings))
    with running(lane_app) as lane_client, running(stack_app) as stack_client:
        yield Twin(lane_app, lane_client), Twin(stack_app, stack_client)


def _dump(value: Any) -> bytes:
    return json.dumps(value).encode()


def _v2(*cars: dict[str, Any], **extra: Any) -> bytes:
    from serving.inference.features import FEATURES

    inputs = [
        {
            "name": f.name,
            "shape": [len(cars)],
            "datatype": "FP64" if f.numeric else "BYTES",
            "data": [car.get(f.name) for car in cars],
        }
        for f in FEATURES
    ]
    return _dump({"inputs": inputs} | extra)


V2 = "/v2/models/car-price/infer"
KEY = {"X-API-Key": "{key}", "Content-Type": "application/json"}
TRITON = {"X-API-Key": "{key}"}  # tritonclient sends no Content-Type
CASES: dict[str, tuple[str, Callable[[], bytes], dict[str, str]]] = {
    # answered by the lane
    "one car": ("/v1/predict", lambda: _dump(unique_car()), KEY),
    "a batch": ("/v1/predict/batch", lambda: _dump([unique_car() for _ in range(5)]), KEY),
    "no content type": ("/v1/predict", lambda: _dump(unique_car()), {"X-API-Key": "{key}"}),
    "json with charset": (
        "/v1/predict",
        lambda: _dump(unique_car()),
        {"X-API-Key": "{key}", "Content-Type": "application/json; charset=utf-8"},
    ),
    "bearer token": (
        "/v1/predict",
        lambda: _dump(unique_car()),
        {"Authorization": "Bearer {token}", "Content-Type": "application/json"},
    ),
    "empty key, good token": (
        "/v1/predict",
        lambda: _dump(unique_car()),
        {"X-API-Key": "", "Authorization": "Bearer {token}"},
    ),
    "admin key": ("/v1/predict", lambda: _dump(unique_car()), {"X-API-Key": "{admin}"}),
    "nulls and absences": (
        "/v1/predict",
        lambda: _dump({k: v for k, v in unique_car(color=None).items() if k != "seats"}),
        KEY,
    ),
    "integral floats and padding": (
        "/v1/predict",
        lambda: _dump(unique_car(year=2018.0, brand="  Toyota ")),
        KEY,
    ),
    "empty batch": ("/v1/predict/batch", lambda: b"[]", KEY),
    "batch over the limit": ("/v1/predict/batch", lambda: _dump([CAR] * 21), KEY),
    # handed to the stack
    "missing field": (
        "/v1/predict",
        lambda: _dump({k: v for k, v in CAR.items() if k != "year"}),
        KEY,
    ),
    "string number": ("/v1/predict", lambda: _dump(CAR | {"year": "2019"}), KEY),
    "boolean number": ("/v1/predict", lambda: _dump(CAR | {"doors": True}), KEY),
    "out of range": ("/v1/predict", lambda: _dump(CAR | {"year": 1900}), KEY),
    "fractional integer": ("/v1/predict", lambda: _dump(CAR | {"seats": 4.5}), KEY),
    "unknown field": ("/v1/predict", lambda: _dump(CAR | {"price": 1}), KEY),
    "NaN": ("/v1/predict", lambda: _dump(CAR).replace(b"16.5", b"NaN"), KEY),
    "not json": ("/v1/predict", lambda: b"{not json", KEY),
    "empty body": ("/v1/predict", lambda: b"", KEY),
    "bad utf-8": ("/v1/predict", lambda: b'{"brand": "\xff"}', KEY),
    "list for one": ("/v1/predict", lambda: _dump([CAR]), KEY),
    "object for a batch": ("/v1/predict/batch", lambda: _dump(CAR), KEY),
    "one bad row in a batch": (
        "/v1/predict/batch",
        lambda: _dump([CAR, CAR | {"km_driven": -1}]),
        KEY,
    ),
    "deep nesting": ("/v1/predict", lambda: b"[" * 5000 + b"]" * 5000, KEY),
    "text body": (
        "/v1/predict",
        lambda: _dump(CAR),
        {"X-API-Key": "{key}", "Content-Type": "text/plain"},
    ),
    "no credentials": ("/v1/predict", lambda: _dump(CAR), {"Content-Type": "application/json"}),
    "unknown key": (
        "/v1/predict",
        lambda: _dump(CAR),
        {"X-API-Key": "cp_0123456789ab_" + "x" * 43},
    ),
    "malformed key": ("/v1/predict", lambda: _dump(CAR), {"X-API-Key": "hello"}),
    "bad token": ("/v1/predict", lambda: _dump(CAR), {"Authorization": "Bearer not.a.token"}),
    "basic auth": ("/v1/predict", lambda: _dump(CAR), {"Authorization": "Basic dXNlcjpwdw=="}),
    "bad key beats good token": (
        "/v1/predict",
        lambda: _dump(CAR),
        {"X-API-Key": "nope", "Authorization": "Bearer {token}"},
    ),
    "cors request": (
        "/v1/predict",
        lambda: _dump(unique_car()),
        KEY | {"Origin": "https://x.test"},
    ),
    "invalid and unauthenticated": ("/v1/predict", lambda: b"{}", {"X-API-Key": "nope"}),
    "hostile and unauthenticated": (
        "/v1/predict/batch",
        lambda: b"[" + b",".join([b"0"] * 400_000) + b"]",
        {"X-API-Key": "cpk_0123456789_" + "x" * 43},
    ),
    "too many values": ("/v1/predict/batch", lambda: b"[" + b",".join([b"0"] * 60_000) + b"]", KEY),
    "too many keys": ("/v1/predict", lambda: _dump({f"k{i}": 0 for i in range(100)}), KEY),
    "too deep": ("/v1/predict/batch", lambda: b"[" * 40 + b"]" * 40, KEY),
    "too long a string": ("/v1/predict", lambda: _dump(CAR | {"brand": "x" * 2000}), KEY),
    "huge integer": ("/v1/predict", lambda: _dump(CAR).replace(b"2019", b"9" * 5000), KEY),
    "gzip encoded": ("/v1/predict", lambda: _dump(CAR), KEY | {"Content-Encoding": "gzip"}),
    # the Open Inference Protocol
    "v2 one car": (V2, lambda: _v2(unique_car()), TRITON),
    "v2 with an id": (V2, lambda: _v2(unique_car(), id="req-7"), KEY),
    "v2 batch": (V2, lambda: _v2(*[unique_car(seats=None) for _ in range(5)]), TRITON),
    "v2 pinned version": (
        "/v2/models/car-price/versions/2/infer",
        lambda: _v2(unique_car()),
        TRITON,
    ),
    "v2 unregistered version": (
        "/v2/models/car-price/versions/999/infer",
        lambda: _v2(unique_car()),
        TRITON,
    ),
    "v2 unknown model": ("/v2/models/other/infer", lambda: _v2(unique_car()), TRITON),
    "v2 out of range": (V2, lambda: _v2(CAR | {"year": 1900}), TRITON),
    "v2 nested data": (
        V2,
        lambda: _dump(
            {"inputs": [{"name": "year", "shape": [1, 1], "datatype": "INT64", "data": [[2019]]}]}
        ),
        TRITON,
    ),
    "v2 not json": (V2, lambda: b"{not json", TRITON),
    "v2 bearer token": (V2, lambda: _v2(unique_car()), {"Authorization": "Bearer {token}"}),
    "v2 bad key": (V2, lambda: _v2(CAR), {"X-API-Key": "nope"}),
    "v2 binary extension": (
        V2,
        lambda: _v2(CAR),
        TRITON | {"Inference-Header-Content-Length": "10"},
    ),
}
HANDED_OVER = {"text body", "no credentials", "cors request", "gzip encoded", "v2 binary extension"}
"""Cases the lane leaves to the stack on their headers alone; it answers every other one."""


def _comparable(r: httpx.Response, sent_id: bool) -> tuple[int, Any, dict[str, str]]:
    headers = {k: v for k, v in r.headers.items() if k not in IGNORED_HEADERS}
    body: Any = r.content
    if r.headers.get("content-type") == "application/json":
        body = r.json()
        if not sent_id and isinstance(body, dict) and "request_id" in body:
            assert body["request_id"] == headers.pop("x-request-id")
            body["request_id"] = "*"
            headers["content-length"] = "*"
    if not sent_id:
        headers.pop("x-request-id", None)
    return r.status_code, body, headers


@pytest.mark.parametrize("case", list(CASES))
def test_the_lane_answers_as_the_full_stack(twins: tuple[Twin, Twin], case: str) -> None:
    lane, stack = twins
    path, make_body, headers = CASES[case]
    body = make_body()
    served = lane_count("served")
    for sent_id in (True, False):
        h = headers | ({"X-Request-ID": f"case-{next(_names)}"} if sent_id else {})
        answers = [twin.send(path, body, h) for twin in (lane, stack)]
        assert _comparable(answers[0], sent_id) == _comparable(answers[1], sent_id), case
        assert answers[0].status_code < 500, answers[0].text
    # The second round repeats the body: the cache answers both sides the same way.
    assert lane_count("served") - served == (0 if case in HANDED_OVER else 2)


@pytest.mark.parametrize(
    "headers",
    [
        [("X-API-Key", ""), ("X-API-Key", "{key}")],
        [("X-API-Key", "nope"), ("X-API-Key", "{key}")],
        [
            ("X-API-Key", "{key}"),
            ("Content-Type", "application/json"),
            ("Content-Type", "text/plain"),
        ],
    ],
)
def test_repeated_headers_get_the_same_answer_from_both(
    twins: tuple[Twin, Twin], headers: list[tuple[str, str]]
) -> None:
    body = _dump(unique_car())
    answers = []
    for twin in twins:
        filled = [(k, v.format(key=twin.keys["predict"])) for k, v in headers]
        request = twin.client.build_request("POST", "/v1/predict", content=body)
        kept = [
            (k, v)
            for k, v in request.headers.multi_items()
            if k.lower() not in ("x-api-key", "content-type")
        ]
        request.headers = httpx.Headers(kept + filled)
        answers.append(twin.client.send(request))
    assert _comparable(answers[0], False) == _comparable(answers[1], False)


def test_a_rate_limited_caller_gets_the_same_429_from_both(registry: ServingRegistry) -> None:
    answers = []
    for fast_lane in (True, False):
        app = create_app(make_settings(registry, fast_lane=fast_lane, rate_limit="2/minute"))
        with running(app) as client:
            codes = [client.post("/v1/predict", json=unique_car()).status_code for _ in range(3)]
            r = client.post("/v1/predict", json=CAR)
            assert codes == [200, 200, 429]
            answers.append(
                (r.status_code, r.json(), set(r.headers) - IGNORED_HEADERS - {"x-request-id"})
            )
    assert answers[0] == answers[1]
    assert answers[0][0] == 429
    assert "retry-after" in answers[0][2]


def test_lane_requests_are_counted_in_the_http_metrics_and_logged(
    twins: tuple[Twin, Twin], caplog: pytest.LogCaptureFixture
) -> None:
    lane, _ = twins
    labels = {"handler": "/v1/predict", "method": "POST", "status": "2xx"}
    before = REGISTRY.get_sample_value("http_requests_total", labels) or 0.0
    served = lane_count("served")
    with caplog.at_level(logging.INFO, logger="serving.access_log"):
        r = lane.send("/v1/predict", _dump(unique_car()), KEY | {"X-Request-ID": "lane-log-1"})
    assert r.status_code == 200
    assert lane_count("served") == served + 1
    assert REGISTRY.get_sample_value("http_requests_total", labels) == before + 1
    line = next(rec for rec in caplog.records if rec.name == "serving.access_log")
    fields = line.fields  # type: ignore[attr-defined]
    assert fields["request_id"] == "lane-log-1"
    assert fields["status"] == 200
    assert fields["path"] == "/v1/predict"
    assert fields["model_version"] == "1"
    assert fields["bytes"] == len(r.content)


def test_dependency_overrides_send_every_request_down_the_stack(
    registry: ServingRegistry,
) -> None:
    app = create_app(make_settings(registry))
    with running(app) as client:
        app.dependency_overrides[get_app_settings] = lambda: app.state.settings
        served = lane_count("served")
        assert client.post("/v1/predict", json=unique_car()).status_code == 200
        assert lane_count("served") == served
        app.dependency_overrides.clear()
        assert client.post("/v1/predict", json=unique_car()).status_code == 200
        assert lane_count("served") == served + 1


def test_a_failure_inside_the_lane_is_a_logged_500_in_the_error_shape(
    registry: ServingRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        async def predict(self, rows: Any, version: str | None = None) -> Any:
            raise RuntimeError("a bug")

    app = create_app(make_settings(registry))
    with running(app) as client, caplog.at_level(logging.ERROR):
        app.state.predictions = Broken()
        r = client.post("/v1/predict", json=CAR, headers={"X-Request-ID": "lane-500"})
    error_of(r, 500, "internal_error")
    assert r.headers["x-request-id"] == "lane-500"
    assert any(rec.exc_info for rec in caplog.records if "unhandled" in rec.getMessage())


def test_a_model_error_is_mapped_as_the_stack_maps_it(registry: ServingRegistry) -> None:
    app = create_app(make_settings(registry, model_alias="nobody-has-this-alias"))
    with running(app, ready=False) as client:
        r = client.post("/v1/predict", json=CAR)
    error_of(r, 503, "model_not_ready")
    assert r.headers["retry-after"] == "5"
    assert "x-ratelimit-limit" in r.headers


def _mutations(car: dict[str, Any], rng: random.Random) -> Iterator[dict[str, Any]]:
    odd = [
        None,
        True,
        "2019",
        " 2019",
        "",
        "  ",
        "x" * 65,
        2019.0,
        2019.5,
        -1,
        1e300,
        0,
        4.0,
        [],
        {},
    ]
    yield car
    for _ in range(6):
        name = rng.choice(list(car))
        yield car | {name: rng.choice(odd)}
    yield {k: v for k, v in car.items() if k != rng.choice(list(car))}
    yield car | {"extra": 1}


def test_the_strict_pre_validator_accepts_only_what_car_accepts_with_the_same_row() -> None:
    rng = random.Random(3)
    bodies = [m for car in cars(300, seed=9) for m in _mutations(car, rng)]
    strict = TypeAdapter(StrictCar)
    accepted = refused_by_strict_only = 0
    for body in bodies:
        raw = json.dumps(body).encode()
        try:
            row = make_row(strict.validate_json(raw))
        except ValidationError:
            with contextlib.suppress(ValidationError):
                Car.model_validate_json(raw)
                refused_by_strict_only += 1
            continue
        assert Car.model_validate_json(raw).to_row() == row, body
        accepted += 1
    # Both outcomes happened: the comparison above was not vacuous.
    assert accepted > 100
    assert refused_by_strict_only > 10
