"""The API's feature schema equals the pipeline's data contract; rows and digests are canonical."""

from __future__ import annotations

import pytest

from pipelines.contract import build_contract
from serving.inference.cars import Cars
from serving.inference.features import FEATURE_NAMES, FEATURES, make_row, row_digest
from tests.serving.support import CAR

pytestmark = pytest.mark.timeout(120)  # a hang fails the test instead of the run


def test_features_are_the_contracts_columns_with_the_same_kinds_bounds_and_nullability() -> None:
    contract = build_contract()
    columns = contract.feature_columns
    assert tuple(c.name for c in columns) == FEATURE_NAMES
    for feature, column in zip(FEATURES, columns, strict=True):
        assert feature.kind == column.kind, feature.name
        assert feature.nullable == column.nullable, feature.name
        assert feature.min == column.min, feature.name
        assert feature.max == column.max, feature.name


def test_make_row_has_every_feature_numbers_as_floats_and_missing_as_none() -> None:
    row = make_row({"brand": "BMW", "year": 2019, "seats": None})
    assert list(row) == list(FEATURE_NAMES)
    assert row["brand"] == "BMW"
    assert row["year"] == 2019.0
    assert isinstance(row["year"], float)
    assert row["seats"] is None
    assert row["color"] is None


def test_digest_is_the_same_for_the_same_car_however_it_was_spelled() -> None:
    a = make_row(CAR)
    b = make_row({k: (float(v) if isinstance(v, int) else v) for k, v in reversed(CAR.items())})
    assert row_digest(a) == row_digest(b)
    assert len(row_digest(a)) == 64


@pytest.mark.parametrize(("field", "value"), [("year", 2018), ("brand", "Honda"), ("color", None)])
def test_digest_changes_with_any_feature(field: str, value: object) -> None:
    assert row_digest(make_row(CAR)) != row_digest(make_row(CAR | {field: value}))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"color": "None"}, {"color": None}),
        ({"brand": "A', 'B", "model": "C"}, {"brand": "A", "model": "B', 'C"}),
        ({"year": 2019.0}, {"year": 2019.0000000000002}),
        ({"brand": 'A", "B', "model": "C"}, {"brand": "A", "model": 'B", "C'}),
        ({"max_power_bhp": 0.0}, {"max_power_bhp": -0.0}),
        ({"color": "\ud800"}, {"color": "\\ud800"}),  # orjson refuses a lone surrogate
    ],
)
def test_digests_of_different_rows_differ_even_for_lookalike_values(
    a: dict[str, object], b: dict[str, object]
) -> None:
    assert row_digest(make_row(CAR | a)) != row_digest(make_row(CAR | b))


def test_digests_of_a_batch_are_each_cars_digest() -> None:
    rows = [make_row(CAR), make_row(CAR | {"color": "\ud800"}), make_row(CAR | {"seats": None})]
    assert Cars.from_rows(rows).digests() == [row_digest(r) for r in rows]
    assert Cars.from_rows(rows[::2]).digests() == [row_digest(r) for r in rows[::2]]
