"""The prediction endpoints' parsers on random mutations of valid bodies.

:func:`serving.api.endpoints.parse` takes a plainly valid /v1 batch a column at a time
(:func:`~serving.api.schemas.v1.plain_batch`) and leaves everything else to pydantic: either way
must get the same cars, or the same error; counting the outcomes shows both ways were taken (the
comparison is not vacuous). /v2 likewise takes a plainly valid request as it is and validates
anything else in full: the same cars either way, and otherwise an error that names the problem,
never anything else. And a body read without the JSON shape check (the fast lane's) gets the
same answer as one checked first, at the least limits the settings allow.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import orjson
import pytest

from serving.api import bodies, endpoints
from serving.api.schemas import v1, v2
from serving.errors import ServingError
from serving.settings import Settings
from tests.serving.support import cars

ODD: list[Any] = [None, True, "2019", " 2019", "", "  ", " Toyota ", "x" * 65, 2019.0, 2019.5]
ODD += [-1, 1e300, 0, 4.0, [], {}, "\u00a0Petrol", "Petrol\u2028", "\x1fPetrol"]


def _outcome(parse: Callable[[], Any]) -> Any:
    try:
        parsed = parse()
    except ServingError as exc:
        return ("error", type(exc).__name__, str(exc), exc.details)
    if isinstance(parsed, tuple):  # v2: (cars, id)
        return ("cars", list(parsed[0]), parsed[1])
    return ("cars", list(parsed))


LIMITS = bodies.JsonLimits(
    max_values=50_000, max_depth=4, max_keys=16, max_items=64, max_string=256
)  # the least the settings allow (CARPRICE_MAX_JSON_*, items at least MIN_ITEMS_LIMIT)


SETTINGS_LIMITS = bodies.JsonLimits.from_settings(Settings())


def _document(body: bytes, *, checked: bool, limits: bodies.JsonLimits) -> bodies.JsonDocument:
    """``body`` as :func:`serving.api.bodies.read_json` gives it, with or without the shape
    check (that raises here, as there)."""
    value = orjson.loads(body)
    document = bodies.JsonDocument(body, value, limits, body.count(b","), body.count(b":"))
    if checked:
        bodies.check_shape(document)
        return bodies.JsonDocument(body, value)
    return document


def _parse(
    endpoint: endpoints.Endpoint,
    body: bytes,
    *,
    checked: bool = False,
    limits: bodies.JsonLimits = SETTINGS_LIMITS,
) -> Any:
    parsed = endpoints.parse(endpoint, _document(body, checked=checked, limits=limits))
    return parsed[0] if endpoint is endpoints.V1_BATCH else parsed


def _v1_batches(rng: random.Random) -> Iterator[list[Any]]:
    pool = cars(200, seed=13)
    for _ in range(150):
        batch = copy.deepcopy(rng.sample(pool, rng.randint(1, 6)))
        for _ in range(rng.randint(0, 2)):
            car = rng.choice(batch)
            name = rng.choice(list(car))
            roll = rng.random()
            if roll < 0.7:
                car[name] = rng.choice(ODD)
            elif roll < 0.8:
                del car[name]
            elif roll < 0.9:  # renamed: as many keys as fields, one of them unknown
                car["extra"] = car.pop(name)
            else:
                car["extra"] = 1
        yield batch
    yield []
    yield [pool[0], 1]


def test_v1_batches_get_the_same_cars_or_error_column_wise_and_car_by_car() -> None:
    taken = 0
    for batch in _v1_batches(random.Random(5)):
        body = json.dumps(batch).encode()
        value = orjson.loads(body)
        fast = v1.plain_batch(value)
        expected = _outcome(partial(v1.validated_batch, body))
        assert _outcome(partial(_parse, endpoints.V1_BATCH, body)) == expected, batch
        if fast is not None:
            taken += 1
            assert ("cars", list(fast)) == expected, batch
    assert 20 < taken < 140


def _v2_bodies(rng: random.Random) -> Iterator[dict[str, Any]]:
    from benchmarks.serving import v2_body

    pool = cars(200, seed=17)
    for _ in range(200):
        body = v2_body(rng.sample(pool, rng.randint(1, 5)))
        if rng.random() < 0.3:
            body["id"] = rng.choice(["42", 42, "x" * 300, None])
        for _ in range(rng.randint(0, 2)):
            t = rng.choice(body["inputs"])
            roll = rng.random()
            if roll < 0.45:
                t["data"][rng.randrange(len(t["data"]))] = rng.choice(ODD)
            elif roll < 0.55:
                t["datatype"] = rng.choice(["INT64", "FP32", "BYTES", "BOOL", 1])
            elif roll < 0.62:
                t["shape"] = rng.choice([[len(t["data"]) + 1], [len(t["data"]), 1], [-1], [1.0]])
            elif roll < 0.69:
                t["data"] = [[v] for v in t["data"]]
            elif roll < 0.74:
                body["inputs"].remove(t)
            elif roll < 0.79:
                body["inputs"].append(copy.deepcopy(t))
            elif roll < 0.84:
                t["name"] = rng.choice(["price", "Brand", "x" * 70])
            elif roll < 0.88:
                t["parameters"] = rng.choice([{}, {"binary_data_size": 8}, [], None])
            elif roll < 0.92:
                body["outputs"] = [{"name": rng.choice(["price", "value"])}]
            elif roll < 0.96:
                t["extra"] = 1
            else:
                body["parameters"] = rng.choice([None, [], {"x": 1}])
        yield body


def test_v2_requests_get_cars_or_an_error_naming_what_is_wrong() -> None:
    outcomes: dict[str, int] = {}
    for request in _v2_bodies(random.Random(7)):
        body = json.dumps(request).encode()
        outcome = _outcome(partial(_parse, endpoints.V2_INFER, body))
        outcomes[outcome[0]] = outcomes.get(outcome[0], 0) + 1
        if outcome[0] == "error":
            assert outcome[2], request  # a message, never an empty one
        else:
            assert len(outcome[1]) == request["inputs"][0]["shape"][0], request
    assert outcomes["cars"] > 40
    assert outcomes["error"] > 40


def test_v2_plain_requests_get_the_same_cars_as_the_full_validation() -> None:
    taken = 0
    for request in _v2_bodies(random.Random(11)):
        body = json.dumps(request).encode()
        value = orjson.loads(body)
        plain = v2.plain(copy.deepcopy(value))
        expected = _outcome(partial(v2.validated, body, value))
        assert _outcome(partial(_parse, endpoints.V2_INFER, body)) == expected, request
        if plain is not None:
            taken += 1
            assert _outcome(partial(lambda got: got, plain)) == expected, request
    assert 20 < taken < 180


@pytest.mark.parametrize(
    "change",
    [
        {"outputs": [{"name": "price", "parameters": {"binary_data": False}}]},
        {"id": "req-1", "parameters": {"binary_data_output": True}},
        {"shape": [3, 1]},
        {"datatype": "INT64"},
        {"text": " Toyota\u2028"},
        {"drop": "color"},
    ],
)
def test_v2_tritonclient_shapes_are_taken_as_they_are(change: dict[str, Any]) -> None:
    from benchmarks.serving import v2_body

    request = v2_body(cars(3, seed=9))
    request.update({k: v for k, v in change.items() if k in ("outputs", "id", "parameters")})
    for t in request["inputs"]:
        if "shape" in change:
            t["shape"] = change["shape"]
        if "datatype" in change and t["name"] in ("year", "doors"):
            t["datatype"] = change["datatype"]
            t["data"] = [int(v) for v in t["data"]]
        if "text" in change and t["name"] == "brand":
            t["data"][1] = change["text"]
    if "drop" in change:
        request["inputs"] = [t for t in request["inputs"] if t["name"] != change["drop"]]
    value = orjson.loads(json.dumps(request))
    plain = v2.plain(value)
    assert plain is not None
    assert _outcome(lambda: plain) == _outcome(partial(v2.validated, b"", value))


def test_v2_checks_every_numeric_tensor_against_its_own_feature() -> None:
    from benchmarks.serving import v2_body

    sample = cars(4, seed=5)
    for name, value, message in [
        ("year", 1989.0, "inputs.year: row 2: out of range [1990, 2026]"),
        ("seats", 4.5, "inputs.seats: row 2: must be a whole number"),
        ("doors", None, "inputs.doors: row 2: null, but the input is required"),
        ("torque_nm", 1501.0, "inputs.torque_nm: row 2: out of range [40, 1500]"),
    ]:
        request = v2_body(sample)
        tensor = next(t for t in request["inputs"] if t["name"] == name)
        tensor["data"][2] = value
        body = json.dumps(request).encode()
        assert _outcome(partial(_parse, endpoints.V2_INFER, body))[2] == message


@pytest.mark.parametrize("nulls", [False, True])
def test_v2_numbers_and_texts_become_row_values(nulls: bool) -> None:
    from benchmarks.serving import v2_body

    sample = cars(3, seed=3)
    if nulls:
        sample[1] = sample[1] | {"color": None, "seats": None}
    body = json.dumps(v2_body(sample)).encode()
    got, request_id = _parse(endpoints.V2_INFER, body)
    assert request_id is None
    assert [row["year"] for row in got] == [float(c["year"]) for c in sample]
    assert all(type(row["year"]) is float for row in got)
    assert [row["color"] for row in got] == [c["color"] for c in sample]


def test_category_keeps_only_short_values_it_has_judged() -> None:
    from serving.api.schemas import columns

    padded = "Toyota" + " " * 500
    assert columns.category(padded) == "Toyota"
    assert padded not in columns._known  # judged each time: the cache stays small
    assert columns.category("Toyota ") == "Toyota"
    assert columns._known["Toyota "] == "Toyota"
    assert columns.category(" ") is None
    assert columns.category("a\x00b") is None


PADDED = [" " * 250 + "Toyota", " " * 251 + "Toyota", "Toyota" + "\u00a0" * 300, "é" * 257]
"""Categories valid once trimmed, 256 characters as sent, 257, and more."""


def _hostile(rng: random.Random, request: Any) -> Any:
    """``request`` (a /v1 batch or a /v2 body) with what only the shape limits refuse."""
    roll = rng.random()
    if isinstance(request, list):
        dicts = [car for car in request if isinstance(car, dict)]
        if not dicts:
            return request
        car = rng.choice(dicts)
        if roll < 0.5:
            car[rng.choice(["brand", "model", "color"])] = rng.choice(PADDED)
        elif roll < 0.75:
            request.extend(copy.deepcopy(request[:1]) * 70)  # past max_items
        return request
    texts = [t for t in request["inputs"] if t.get("datatype") == "BYTES" and t.get("data")]
    if roll < 0.4 and texts:
        tensor = rng.choice(texts)
        tensor["data"][0] = rng.choice(PADDED)
    elif roll < 0.55 and texts:
        rng.choice(texts)["parameters"] = rng.choice([{"a": [1]}, {"a": {"b": 1}}, {"x" * 257: 1}])
    elif roll < 0.7:
        request["parameters"] = rng.choice(
            [{str(i): i for i in range(17)}, {"a": "y" * 257}, {"a": "y" * 256}, {"a": None}]
        )
    elif roll < 0.8:
        request["id"] = rng.choice(["i" * 256, "i" * 257])
    elif roll < 0.9:
        request["outputs"] = [{"name": "price", "parameters": {"binary_data": [False]}}]
    return request


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_body_read_without_the_shape_check_gets_the_answer_of_one_checked_first(
    version: str,
) -> None:
    rng = random.Random(23)
    endpoint = endpoints.V1_BATCH if version == "v1" else endpoints.V2_INFER
    requests = _v1_batches(rng) if version == "v1" else _v2_bodies(rng)
    outcomes: dict[str, int] = {}
    for request in requests:
        body = json.dumps(_hostile(rng, request), ensure_ascii=False).encode()
        checked = _outcome(partial(_parse, endpoint, body, checked=True, limits=LIMITS))
        assert _outcome(partial(_parse, endpoint, body, limits=LIMITS)) == checked, body[:300]
        kind = checked[1] if checked[0] == "error" else "cars"
        outcomes[kind] = outcomes.get(kind, 0) + 1
    # Both ways taken, and the limits refused some of what the plain reading would take.
    assert outcomes["cars"] > 10
    assert outcomes["LimitExceeded"] > 10


def test_the_settings_cannot_go_below_what_the_plain_reading_proves() -> None:
    from annotated_types import Ge

    from serving.api.schemas.columns import PLAIN_STRING_MAX
    from serving.inference.features import FEATURES

    def least(name: str) -> int:
        return next(m.ge for m in Settings.model_fields[name].metadata if isinstance(m, Ge))

    assert least("max_json_string") >= max(PLAIN_STRING_MAX, v2.MAX_ID)
    assert least("max_json_keys") >= max(len(FEATURES), v2._FLAT_MAX, len(v2._REQUEST_KEYS))
    assert least("max_json_depth") >= 4  # a /v2 body: request, inputs, tensor, data
    assert max(v2.MAX_INPUTS, v2.MAX_OUTPUTS) <= bodies.MIN_ITEMS_LIMIT
