from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.contract import FEATURES, DataContract
from pipelines.params import TrainParams
from pipelines.train import build_model, cross_validated_metrics, fit, signature_for, split_xy

FAST = TrainParams(max_iter=60, cv_folds=0)


def test_fit_predicts_positive_prices_for_every_row(
    listings: pd.DataFrame, contract: DataContract
) -> None:
    x, y = split_xy(listings)
    model = fit(FAST, contract, x, y)
    predicted = model.predict(x)
    assert predicted.shape == (len(x),)
    assert np.isfinite(predicted).all()
    assert (predicted > 0).all()
    assert np.corrcoef(predicted, y)[0, 1] > 0.9


def test_unknown_and_missing_categories_are_handled(
    listings: pd.DataFrame, contract: DataContract
) -> None:
    x, y = split_xy(listings)
    model = fit(FAST, contract, x, y)
    odd = x.head(3).copy()
    odd["brand"] = ["Tesla", None, "BMW"]
    odd["engine_cc"] = np.nan
    assert np.isfinite(model.predict(odd)).all()


def test_log_target_is_optional(listings: pd.DataFrame, contract: DataContract) -> None:
    x, y = split_xy(listings)
    raw = build_model(TrainParams(max_iter=20, log_target=False), contract)
    logged = build_model(TrainParams(max_iter=20, log_target=True), contract)
    assert type(raw[-1]).__name__ == "HistGradientBoostingRegressor"
    assert type(logged[-1]).__name__ == "TransformedTargetRegressor"
    assert np.isfinite(raw.fit(x, y).predict(x.head())).all()


def test_cross_validation_reports_mean_and_spread(
    listings: pd.DataFrame, contract: DataContract
) -> None:
    x, y = split_xy(listings)
    params = TrainParams(max_iter=30, cv_folds=3)
    metrics = cross_validated_metrics(build_model(params, contract), x, y, params)
    assert set(metrics) == {"cv_rmse", "cv_rmse_std", "cv_mae", "cv_mae_std", "cv_r2", "cv_r2_std"}
    assert 0 < metrics["cv_mae"] < metrics["cv_rmse"]
    assert 0.5 < metrics["cv_r2"] <= 1
    assert cross_validated_metrics(build_model(FAST, contract), x, y, FAST) == {}


def test_signature_marks_nullable_columns_optional(contract: DataContract) -> None:
    inputs = {c.name: c for c in signature_for(contract).inputs.inputs}
    assert list(inputs) == list(FEATURES)
    assert inputs["brand"].required
    assert not inputs["mileage_kmpl"].required
    assert inputs["year"].type.to_dict() == {"type": "any"}
    assert inputs["color"].type.name == "string"


@pytest.mark.parametrize(
    "bad", [{"learning_rate": 0}, {"max_iter": 0}, {"cv_folds": -1}, {"nonsense": 1}]
)
def test_bad_params_are_refused(bad: dict[str, object]) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        TrainParams.model_validate(bad)


@pytest.mark.parametrize("log_target", [True, False])
def test_declared_skops_types_cover_the_model(
    listings: pd.DataFrame, contract: DataContract, log_target: bool
) -> None:
    import skops.io

    from pipelines.train import SKOPS_TRUSTED_TYPES

    x, y = split_xy(listings)
    model = fit(TrainParams(max_iter=5, cv_folds=0, log_target=log_target), contract, x, y)
    assert set(skops.io.get_untrusted_types(data=skops.io.dumps(model))) <= set(SKOPS_TRUSTED_TYPES)
