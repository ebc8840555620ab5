"""/v2, the Open Inference Protocol: health, metadata, infer, version pinning, errors.

One test drives a real server with the real ``tritonclient[http]`` client (JSON mode, which
sends no Content-Type header).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from fastapi.testclient import TestClient
from tritonclient.utils import InferenceServerException

from serving.inference.features import BY_NAME, FEATURE_NAMES
from serving.main import create_app
from tests.serving.live import live_server
from tests.serving.support import (
    CAR,
    REQUIRED,
    ServingRegistry,
    cars,
    error_of,
    make_settings,
    running,
)

pytestmark = pytest.mark.timeout(120)  # a hang fails the test instead of the run


def tensors(batch: list[dict[str, Any]], int_columns: tuple[str, ...] = ()) -> dict[str, Any]:
    """An inference request body with one ``[N]`` tensor per feature of ``batch``."""
    inputs = []
    for name in FEATURE_NAMES:
        if BY_NAME[name].numeric:
            datatype = "INT64" if name in int_columns else "FP64"
        else:
            datatype = "BYTES"
        data = [car.get(name) for car in batch]
        if datatype == "INT64":
            data = [None if v is None else int(v) for v in data]
        inputs.append({"name": name, "shape": [len(batch)], "datatype": datatype, "data": data})
    return {"inputs": inputs}


def infer(client: TestClient, body: Any, path: str = "/v2/models/car-price/infer") -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=content)


# --- health and metadata ---


def test_server_metadata_and_health(client: TestClient) -> None:
    meta = client.get("/v2").json()
    assert meta["name"] == "carprice"
    assert meta["version"]
    assert meta["extensions"] == []
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/car-price/ready").json() == {"name": "car-price", "ready": True}


def test_model_metadata_lists_inputs_output_and_versions(client: TestClient) -> None:
    meta = client.get("/v2/models/car-price").json()
    assert meta["name"] == "car-price"
    assert meta["versions"] == ["5", "4", "3", "2", "1"]
    assert [i["name"] for i in meta["inputs"]] == list(FEATURE_NAMES)
    assert {i["datatype"] for i in meta["inputs"] if i["name"] == "brand"} == {"BYTES"}
    assert {i["datatype"] for i in meta["inputs"] if i["name"] == "year"} == {"FP64"}
    assert meta["outputs"] == [{"name": "price", "datatype": "FP64", "shape": [-1]}]
    assert client.get("/v2/models/car-price/versions/2").json()["versions"] == ["2"]


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/other",
        "/v2/models/other/ready",
        "/v2/models/car-price/versions/99",
        "/v2/models/car-price/versions/abc",
        "/v2/models/car-price/versions/-1/ready",
        "/v2/models/car-price/versions/99/ready",
    ],
)
def test_unknown_model_or_version_is_404(client: TestClient, path: str) -> None:
    error_of(client.get(path), 404, "model_not_found")


# --- infer ---


def test_infer_prices_every_row_like_v1(client: TestClient) -> None:
    batch = cars(25, seed=21)
    r = infer(client, tensors(batch) | {"id": "req-7"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == "car-price"
    assert body["model_version"] == "1"
    assert body["id"] == "req-7"
    [out] = body["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("price", "FP64", [25])
    v1 = client.post("/v1/predict/batch", json=batch).json()["prices"]
    assert out["data"] == v1


def test_infer_answers_with_the_requests_id_or_none(client: TestClient) -> None:
    # The protocol: the response's id is the request's. The server's own is in X-Request-ID.
    r = infer(client, tensors([CAR]))
    assert "id" not in r.json()
    assert "parameters" not in r.json()
    assert r.headers["X-Request-ID"]
    r = infer(client, tensors([CAR]) | {"id": "mine-1"})
    assert r.json()["id"] == "mine-1"


def test_integer_tensors_nested_column_shape_and_missing_optional_inputs(
    client: TestClient,
) -> None:
    expected = client.post("/v1/predict", json=CAR).json()["price"]
    as_ints = tensors([CAR], int_columns=("year", "km_driven", "doors", "seats", "engine_cc"))
    assert infer(client, as_ints).json()["outputs"][0]["data"] == [expected]
    nested = tensors([CAR])
    for t in nested["inputs"]:
        t["shape"], t["data"] = [1, 1], [[v] for v in t["data"]]
    assert infer(client, nested).json()["outputs"][0]["data"] == [expected]

    minimal = {k: CAR[k] for k in REQUIRED}
    only_required = {"inputs": [t for t in tensors([minimal])["inputs"] if t["name"] in REQUIRED]}
    with_nulls = tensors([minimal])
    a, b = infer(client, only_required), infer(client, with_nulls)
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    assert a.json()["outputs"][0]["data"] == b.json()["outputs"][0]["data"]


def test_body_is_parsed_whatever_the_content_type(client: TestClient) -> None:
    content = json.dumps(tensors([CAR])).encode()
    for headers in ({}, {"Content-Type": "text/plain"}, {"Content-Type": "application/json"}):
        r = client.post("/v2/models/car-price/infer", content=content, headers=headers)
        assert r.status_code == 200, (headers, r.text)


def test_pinned_version_answers_with_that_version(client: TestClient) -> None:
    batch = cars(10, seed=22)
    production = infer(client, tensors(batch)).json()
    v2 = infer(client, tensors(batch), "/v2/models/car-price/versions/2/infer").json()
    v1 = infer(client, tensors(batch), "/v2/models/car-price/versions/1/infer").json()
    assert v2["model_version"] == "2"
    assert v1["model_version"] == "1"
    assert v1["outputs"] == production["outputs"]
    assert v2["outputs"][0]["data"] != production["outputs"][0]["data"]
    assert client.get("/v2/models/car-price/versions/2/ready").json()["ready"] is True


@pytest.mark.parametrize("version", ["3", "4", "5"])
def test_a_pinned_version_that_cannot_be_served_is_409(client: TestClient, version: str) -> None:
    path = f"/v2/models/car-price/versions/{version}/infer"
    error = error_of(infer(client, tensors([CAR]), path), 409, "model_unservable")
    assert f"car-price/{version}" in error["message"]
    # Remembered: the second request does not load it again, and says the same.
    again = error_of(infer(client, tensors([CAR]), path), 409, "model_unservable")
    assert again["message"].endswith(error["message"].split(": ", 1)[1])


def _with(body: dict[str, Any], name: str, **changes: Any) -> dict[str, Any]:
    for t in body["inputs"]:
        if t["name"] == name:
            t.update(changes)
    return body


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda b: {"inputs": [t for t in b["inputs"] if t["name"] != "year"]}, "inputs.year"),
        (
            lambda b: (
                b
                | {
                    "inputs": [
                        *b["inputs"],
                        {"name": "vin", "shape": [1], "datatype": "BYTES", "data": ["x"]},
                    ]
                }
            ),
            "inputs",
        ),
        (lambda b: _with(b, "brand", datatype="FP64", data=[1.0]), "inputs.brand"),
        (lambda b: _with(b, "year", datatype="BYTES", data=["2019"]), "inputs.year"),
        (lambda b: _with(b, "year", data=[1800.0]), "inputs.year"),
        (lambda b: _with(b, "year", data=[2019.5]), "inputs.year"),
        (lambda b: _with(b, "year", data=[None]), "inputs.year"),
        (lambda b: _with(b, "km_driven", shape=[2], data=[1.0, 2.0]), "inputs.km_driven"),
        (lambda b: _with(b, "km_driven", shape=[2]), "inputs.km_driven"),
        (lambda b: _with(b, "km_driven", shape=[1, 2]), "inputs.km_driven"),
        (lambda b: _with(b, "brand", data=[""]), "inputs.brand"),
        (lambda b: _with(b, "brand", data=["B" * 65]), "inputs.brand"),
        (lambda b: _with(b, "brand", data=["Toy\x00ota"]), "inputs.brand"),
        (lambda b: _with(b, "year", datatype="BOOL"), "body.inputs"),
        (lambda b: _with(b, "year", data=["2019"]), "body.inputs"),
        (lambda b: _with(b, "year", datatype="INT64", data=[2019.0]), "body.inputs"),
        (lambda b: b | {"outputs": [{"name": "mileage"}]}, None),
        (lambda b: b | {"unexpected": 1}, "body.unexpected"),
        (lambda b: {"inputs": []}, "body.inputs"),
    ],
)
def test_invalid_tensors_are_422_naming_the_input(
    client: TestClient, mutate: Any, where: str | None
) -> None:
    error = error_of(infer(client, mutate(tensors([CAR]))), 422, "invalid_features")
    if where:
        assert any(d["loc"].startswith(where) for d in error["details"]), error


def test_duplicate_input_is_422(client: TestClient) -> None:
    body = tensors([CAR])
    body["inputs"].append(dict(body["inputs"][0]))
    error = error_of(infer(client, body), 422, "invalid_features")
    assert "twice" in error["message"] or "at most" in error["message"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity"])
def test_nan_and_infinity_in_a_tensor_are_422(client: TestClient, literal: str) -> None:
    text = json.dumps(_with(tensors([CAR]), "torque_nm", data=[12345.5]))
    r = infer(client, text.replace("12345.5", literal).encode())
    error_of(r, 422, "invalid_json")  # RFC 8259 has no NaN or Infinity


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b'"x"', b"null"])
def test_empty_or_malformed_bodies_are_422(client: TestClient, body: bytes) -> None:
    error_of(infer(client, body), 422)


@pytest.mark.parametrize("body", [b"{", b"not json", b'{"inputs": [],}', b"[1, 2"])
def test_a_body_that_is_not_json_is_invalid_json_on_v1_and_v2_alike(
    client: TestClient, body: bytes
) -> None:
    v1 = client.post("/v1/predict", content=body, headers={"Content-Type": "application/json"})
    v2 = infer(client, body)
    assert (
        error_of(v1, 422, "invalid_json")["message"] == error_of(v2, 422, "invalid_json")["message"]
    )


def test_binary_tensor_data_is_refused_clearly(client: TestClient) -> None:
    content = json.dumps(tensors([CAR])).encode()
    r = client.post(
        "/v2/models/car-price/infer",
        content=content,
        headers={"Inference-Header-Content-Length": str(len(content))},
    )
    error = error_of(r, 400, "unsupported_request")
    assert "binary_data=False" in error["message"]


def test_batch_max_applies_to_v2(registry: ServingRegistry) -> None:
    with running(create_app(make_settings(registry, batch_max=3))) as client:
        assert infer(client, tensors([CAR] * 3)).status_code == 200
        error_of(infer(client, tensors([CAR] * 4)), 422, "limit_exceeded")


def test_v2_body_limit_is_413_with_or_without_content_length(registry: ServingRegistry) -> None:
    with running(create_app(make_settings(registry, max_body_bytes=2048))) as client:
        content = json.dumps(tensors([CAR] * 20)).encode()
        error_of(client.post("/v2/models/car-price/infer", content=content), 413)
        chunks = iter([content[:1000], content[1000:2000], content[2000:]])
        error_of(client.post("/v2/models/car-price/infer", content=chunks), 413)


def test_not_ready_is_503_on_v2(registry: ServingRegistry) -> None:
    with running(create_app(make_settings(registry, model_alias="nobody")), ready=False) as client:
        error_of(client.get("/v2/health/ready"), 503, "model_not_ready")
        error_of(client.get("/v2/models/car-price/ready"), 503, "model_not_ready")
        error_of(infer(client, tensors([CAR])), 503, "model_not_ready")
        # Pinned versions do not need a production model.
        pinned = infer(client, tensors([CAR]), "/v2/models/car-price/versions/2/infer")
        assert pinned.status_code == 200, pinned.text


# --- the real client ---


def _triton_inputs(batch: list[dict[str, Any]], binary: bool = False) -> list[triton.InferInput]:
    inputs = []
    for name in FEATURE_NAMES:
        if BY_NAME[name].numeric:
            values = [np.nan if c[name] is None else c[name] for c in batch]
            array = np.array(values, dtype=np.float64)
            if np.isnan(array).any():
                continue  # a column with missing values is left out (all missing) here
            tensor = triton.InferInput(name, [len(batch)], "FP64")
        else:
            array = np.array([c[name] for c in batch], dtype=object)
            tensor = triton.InferInput(name, [len(batch)], "BYTES")
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return inputs


def test_tritonclient_http_works_against_the_server(registry: ServingRegistry) -> None:
    app = create_app(make_settings(registry))
    batch = [
        CAR,
        CAR | {"year": 2012, "km_driven": 150_000},
        CAR | {"brand": "BMW", "model": "3 Series"},
    ]
    with live_server(app) as server:
        client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
        auth = server.headers  # tritonclient sends X-API-Key like any header
        try:
            assert client.is_server_live()
            assert client.is_server_ready()
            assert client.is_model_ready("car-price", headers=auth)
            assert client.is_model_ready("car-price", "2", headers=auth)
            assert not client.is_model_ready("other", headers=auth)
            assert client.get_server_metadata()["name"] == "carprice"
            meta = client.get_model_metadata("car-price", headers=auth)
            assert [i["name"] for i in meta["inputs"]] == list(FEATURE_NAMES)

            result = client.infer(
                "car-price",
                _triton_inputs(batch),
                outputs=[triton.InferRequestedOutput("price", binary_data=False)],
                request_id="tc-1",
                headers=auth,
            )
            prices = result.as_numpy("price")
            assert prices is not None
            assert prices.shape == (3,)
            assert prices.dtype == np.float64
            assert (prices > 0).all()
            response = result.get_response()
            assert (response["model_version"], response["id"]) == ("1", "tc-1")

            # Outputs not named: the client asks for binary outputs and reads JSON ones.
            default = client.infer("car-price", _triton_inputs(batch), headers=auth)
            assert np.array_equal(default.as_numpy("price"), prices)

            pinned = client.infer(
                "car-price", _triton_inputs(batch), model_version="2", headers=auth
            )
            assert pinned.get_response()["model_version"] == "2"
            assert not np.array_equal(pinned.as_numpy("price"), prices)

            with pytest.raises(InferenceServerException) as err:
                client.infer("car-price", _triton_inputs(batch, binary=True), headers=auth)
            assert "binary" in str(err.value)
            with pytest.raises(InferenceServerException):
                client.infer("car-price", _triton_inputs(batch), model_version="99", headers=auth)
        finally:
            client.close()
