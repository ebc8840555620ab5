"""The JSON limits of :mod:`serving.api.bodies` against a plain recursive reading of them.

The module proves the limits from the body's bytes where it can (counts, the quotes'
positions) and otherwise checks the parsed value a level at a time: on random documents near
every limit, it must refuse exactly what the reference refuses, and name the same limit when
only one is broken.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from serving.api import bodies
from serving.errors import LimitExceeded

LIMITS = bodies.JsonLimits(max_values=50_000, max_depth=6, max_keys=8, max_items=10, max_string=16)


def _broken(value: Any, depth: int = 1) -> set[str]:
    """The limits ``value`` breaks, read the obvious way."""
    out: set[str] = set()
    if isinstance(value, dict):
        if depth > LIMITS.max_depth:
            out.add("too_deep")
        if len(value) > LIMITS.max_keys:
            out.add("too_many_keys")
        if any(len(k) > LIMITS.max_string for k in value):
            out.add("string_too_long")
        for v in value.values():
            out |= _broken(v, depth + 1)
    elif isinstance(value, list):
        if depth > LIMITS.max_depth:
            out.add("too_deep")
        if len(value) > LIMITS.max_items:
            out.add("too_many_items")
        for v in value:
            out |= _broken(v, depth + 1)
    elif isinstance(value, str) and len(value) > LIMITS.max_string:
        out.add("string_too_long")
    return out


_TEXTS = ["", "a", "é" * 10, "€" * 16, "x" * 16, "x" * 17, 'quo"te', "back\\slash", "\u2028" * 9]


def _document(rng: random.Random, depth: int = 1) -> Any:
    roll = rng.random()
    if depth < 8 and roll < 0.3:
        return {
            rng.choice(_TEXTS) + str(i): _document(rng, depth + 1)
            for i in range(rng.choice([0, 1, 3, 8, 9]))
        }
    if depth < 8 and roll < 0.55:
        return [_document(rng, depth + 1) for _ in range(rng.choice([0, 1, 4, 10, 11]))]
    return rng.choice([*_TEXTS, 1, 2.5, None, True])


def _parse(body: bytes, limits: bodies.JsonLimits) -> Any:
    """``body`` parsed and its shape checked, as :func:`bodies.read_json` does."""
    value = bodies._decode(body, limits)
    document = bodies.JsonDocument(body, value, limits, body.count(b","), body.count(b":"))
    bodies.check_shape(document)
    return value


def _outcome(body: bytes) -> set[str]:
    try:
        _parse(body, LIMITS)
    except LimitExceeded as exc:
        return {exc.details[0]["type"]}
    return set()


def _level_by_level(body: bytes) -> set[str]:
    """:func:`_outcome` of the check that bodies of 8 KB and more get, whatever the size."""
    try:
        value = orjson.loads(body)
        bodies._check(value, LIMITS, strings=not bodies._strings_short(body, LIMITS.max_string))
    except LimitExceeded as exc:
        return {exc.details[0]["type"]}
    return set()


@pytest.mark.parametrize("outcome", [_outcome, _level_by_level])
def test_random_documents_are_refused_exactly_when_they_break_a_limit(
    outcome: Callable[[bytes], set[str]],
) -> None:
    rng = random.Random(3)
    seen = {"ok": 0, "refused": 0}
    for _ in range(1000):
        value = _document(rng)
        body = json.dumps(value, ensure_ascii=rng.random() < 0.5).encode()
        broken, got = _broken(value), outcome(body)
        assert bool(got) == bool(broken), value
        assert got <= broken, value  # the limit it names is one the document breaks
        seen["refused" if got else "ok"] += 1
    assert min(seen.values()) > 100


@pytest.mark.parametrize("outcome", [_outcome, _level_by_level])
@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (["x" * 17], "string_too_long"),
        ({"k" * 17: 1}, "string_too_long"),
        (["a\\" + "b" * 15], "string_too_long"),  # 17 characters, one of them escaped
        ([[[[[[[]]]]]]], "too_deep"),
        ([{str(i): i for i in range(9)}], "too_many_keys"),
        ([list(range(11))], "too_many_items"),
    ],
)
def test_each_limit_is_named(value: Any, kind: str, outcome: Callable[[bytes], set[str]]) -> None:
    padded = [value, "p" * 16, list(range(10)), {str(i): [i] for i in range(8)}]
    assert outcome(orjson.dumps(padded)) == {kind}


@pytest.mark.parametrize("outcome", [_outcome, _level_by_level])
def test_a_string_within_the_limit_in_characters_passes_whatever_its_bytes(
    outcome: Callable[[bytes], set[str]],
) -> None:
    value = ["€" * 16, "é" * 16, "\u2028" * 16, "p" * 16, list(range(10))]
    assert outcome(json.dumps(value, ensure_ascii=False).encode()) == set()
    assert outcome(json.dumps(value, ensure_ascii=True).encode()) == set()  # \\u escapes


def test_a_big_batch_is_checked_level_by_level_and_refused_past_a_limit() -> None:
    limits = bodies.JsonLimits(50_000, 32, 64, 1000, 1024)
    cars = [{"brand": "é" * 300, "km_driven": i, "x": [[{"y": None}]]} for i in range(300)]
    body = orjson.dumps(cars)
    assert len(body) > bodies._WALK_MAX
    assert _parse(body, limits) == cars
    deep: Any = []
    for _ in range(32):
        deep = [deep]
    for broken, kind in [
        ([*cars, {"brand": "é" * 1025}], "string_too_long"),
        ([*cars, {"k": deep}], "too_deep"),
        ([*cars, {str(i): i for i in range(65)}], "too_many_keys"),
        (cars * 4, "too_many_items"),
    ]:
        body = orjson.dumps(broken)
        with pytest.raises(LimitExceeded) as refused:
            _parse(body, limits)
        assert refused.value.details[0]["type"] == kind
