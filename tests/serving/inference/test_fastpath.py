"""The compiled fast path predicts exactly what the MLflow-loaded pipeline predicts."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipelines.contract import FEATURES, build_contract
from pipelines.params import TrainParams
from pipelines.synthetic import generate
from pipelines.train import fit, split_xy
from serving.inference import fastpath
from serving.inference.fastpath import compile_pipeline


def _rows(x: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in x.to_dict("records")
    ]


@pytest.fixture(scope="module", params=[True, False], ids=["log-target", "raw-target"])
def loaded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A pipeline trained without any Porsche, saved and loaded back through MLflow."""
    import mlflow.sklearn

    from pipelines.train import SKOPS_TRUSTED_TYPES

    df = generate(4_000, seed=13).listings
    df = df[df["brand"] != "Porsche"]
    x, y = split_xy(df)
    model = fit(
        TrainParams(max_iter=120, cv_folds=0, log_target=request.param), build_contract(), x, y
    )
    path = tmp_path_factory.mktemp("model") / "model"
    mlflow.sklearn.save_model(
        model, str(path), serialization_format="skops", skops_trusted_types=SKOPS_TRUSTED_TYPES
    )
    return mlflow.sklearn.load_model(str(path))


@pytest.fixture(scope="module")
def holdout() -> pd.DataFrame:
    x, _ = split_xy(generate(3_000, seed=99).listings)
    x = x.copy()
    x.loc[x.index[:40], "brand"] = "Tesla"  # not in the contract
    x.loc[x.index[40:80], "model"] = None
    x.loc[x.index[80:120], "color"] = "Plaid"
    x.loc[x.index[120:160], ["engine_cc", "max_power_bhp", "torque_nm"]] = np.nan
    x.loc[x.index[160:170], "km_driven"] = 0.0
    x.loc[x.index[170:180], "year"] = 1990.0
    return x  # also holds Porsches, a category the booster never saw


@pytest.mark.parametrize(
    "batch", [1, 2, fastpath.SUCCESSORS_MAX_ROWS, 7, fastpath.PYTHON_BINS_MAX_ROWS, 17, 250, 3_000]
)
def test_fast_path_equals_pipeline_predict(loaded: Any, holdout: pd.DataFrame, batch: int) -> None:
    compiled = compile_pipeline(loaded)
    assert compiled is not None
    expected = loaded.predict(holdout)
    rows = _rows(holdout)
    got = np.concatenate(
        [compiled.predict(rows[i : i + batch]) for i in range(0, len(rows), batch)]
    )
    np.testing.assert_array_equal(got, expected)


def test_absent_keys_count_as_missing(loaded: Any, holdout: pd.DataFrame) -> None:
    compiled = compile_pipeline(loaded)
    assert compiled is not None
    row = _rows(holdout.head(1))[0]
    sparse = {k: v for k, v in row.items() if k not in {"color", "seats"}}
    frame = holdout.head(1).copy()
    frame[["color", "seats"]] = [None, np.nan]
    np.testing.assert_array_equal(compiled.predict([sparse]), loaded.predict(frame))


def test_other_pipelines_are_not_compiled() -> None:
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.arange(20.0).reshape(10, 2)
    other = make_pipeline(StandardScaler(), LinearRegression()).fit(x, x[:, 0])
    assert compile_pipeline(other) is None
    assert compile_pipeline(LinearRegression().fit(x, x[:, 0])) is None


def test_columns_cover_the_contract(loaded: Any) -> None:
    compiled = compile_pipeline(loaded)
    assert compiled is not None
    assert sorted(compiled.columns) == sorted(FEATURES)
