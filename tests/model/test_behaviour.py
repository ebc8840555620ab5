"""Model behaviour: what a used-car price model must get right, all else equal."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipelines.contract import FEATURES
from pipelines.params import TrainParams
from pipelines.synthetic import generate
from pipelines.train import fit, split_xy
from pipelines.validate import build_contract

pytestmark = pytest.mark.model

BASE = {
    "brand": "Volkswagen",
    "model": "Golf",
    "fuel_type": "Petrol",
    "transmission": "Manual",
    "body_type": "Hatchback",
    "seller_type": "Dealer",
    "owner_type": "First",
    "color": "Grey",
    "year": 2018,
    "km_driven": 80_000,
    "engine_cc": 1500,
    "max_power_bhp": 130.0,
    "mileage_kmpl": 19.0,
    "seats": 5,
    "torque_nm": 200.0,
    "doors": 5,
}


@pytest.fixture(scope="module")
def model() -> Any:
    x, y = split_xy(generate(10_000, seed=21).listings)
    return fit(TrainParams(cv_folds=0), build_contract(min_rows=1), x, y)


def price(fitted: Any, /, **changes: object) -> float:
    row = pd.DataFrame([{**BASE, **changes}])[list(FEATURES)]
    x, _ = split_xy(row.assign(selling_price=1.0))
    return float(fitted.predict(x)[0])


def test_newer_car_costs_more(model: Any) -> None:
    prices = [price(model, year=y) for y in (2008, 2013, 2018, 2023)]
    assert prices == sorted(prices)
    assert prices[-1] > 2 * prices[0]


def test_more_kilometres_cost_less(model: Any) -> None:
    assert price(model, km_driven=20_000) > price(model, km_driven=200_000)


def test_premium_brand_costs_more(model: Any) -> None:
    bmw = price(model, brand="BMW", model="3 Series", body_type="Sedan", doors=4)
    dacia = price(model, brand="Dacia", model="Sandero")
    assert bmw > 1.5 * dacia


def test_automatic_and_first_owner_are_worth_more(model: Any) -> None:
    assert price(model, transmission="Automatic") > price(model, transmission="Manual")
    assert price(model, owner_type="First") > price(model, owner_type="Fourth & Above")


def test_colour_moves_the_price_only_a_little(model: Any) -> None:
    grey, black = price(model, color="Grey"), price(model, color="Black")
    assert abs(grey - black) / grey < 0.05


def test_missing_values_still_give_a_sensible_price(model: Any) -> None:
    full = price(model)
    sparse = price(
        model,
        engine_cc=None,
        max_power_bhp=None,
        mileage_kmpl=None,
        torque_nm=None,
        seats=None,
        body_type=None,
        owner_type=None,
        color=None,
    )
    assert np.isfinite(sparse)
    assert abs(sparse - full) / full < 0.3
