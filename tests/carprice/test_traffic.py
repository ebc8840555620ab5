"""``carprice traffic``: drift specs and the cars they make (the live run is in
tests/monitoring/test_stack.py)."""

from __future__ import annotations

import numpy as np
import pytest

from carprice.traffic import Shift, SpecError, cars_frame, parse_spec, to_json_cars
from pipelines.contract import build_contract


def test_the_issues_spec_parses() -> None:
    assert parse_spec("year+5,km_driven*2,fuel_type=Electric:0.3") == [
        Shift("year", "+", 5.0),
        Shift("km_driven", "*", 2.0),
        Shift("fuel_type", "=", "Electric", 0.3),
    ]
    assert parse_spec("") == []
    assert parse_spec(" seats - 1 , doors=3:0.5 ") == [
        Shift("seats", "-", 1.0),
        Shift("doors", "=", 3.0, 0.5),
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("yaer+1", "'yaer' is not a feature"),
        ("fuel_type+1", "fuel_type is a category, only = applies"),
        ("year+x", "year is a number, 'x' is not"),
        ("year+inf", "is not a finite number"),
        ("year+1:2", "the share must be in (0, 1]"),
        ("year+1:x", "share 'x' is not a number"),
        ("year%3", "cannot read 'year%3'"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_spec(spec)


def test_shifts_move_the_features_and_stay_valid() -> None:
    plain = cars_frame(2_000, 3, [])
    shifted = cars_frame(2_000, 3, parse_spec("year-4,km_driven*2,fuel_type=Electric:0.3"))
    assert plain["year"].mean() - shifted["year"].mean() == pytest.approx(4, abs=0.2)
    assert shifted["km_driven"].median() > 1.8 * plain["km_driven"].median()
    assert (shifted["fuel_type"] == "Electric").mean() == pytest.approx(0.3, abs=0.04)
    contract = build_contract()
    for name in ("year", "km_driven"):
        spec = contract.column(name)
        assert shifted[name].between(spec.min, spec.max).all()
    # Clipped to the contract, rounded for integer features: every car is valid input.
    newer = cars_frame(500, 3, parse_spec("year+5"))
    assert newer["year"].max() == 2026
    assert np.array_equal(newer["year"], newer["year"].round())
    car = to_json_cars(newer.head(1))[0]
    assert isinstance(car["year"], int)
    assert set(car) == {c.name for c in contract.feature_columns}
