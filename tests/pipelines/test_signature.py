"""The logged model takes the project's own CSV and the JSON clients send: with pyfunc, and with
the real `mlflow models predict` command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.contract import TARGET, DataContract
from pipelines.params import Params, TrainParams
from pipelines.synthetic import generate, write_csv
from pipelines.train import fit, log_run, split_xy


@pytest.fixture
def logged(registry: str, listings: pd.DataFrame, contract: DataContract) -> str:
    x, y = split_xy(listings)
    params = Params(train=TrainParams(max_iter=30, cv_folds=0))
    model = fit(params.train, contract, x, y)
    run = log_run(model, params, contract, {}, x.head(3), x.head(50), {})
    return run["model_uri"]


def _csv(tmp_path: Path, rows: int) -> Path:
    path = tmp_path / f"cars-{rows}.csv"
    write_csv(generate(rows, seed=5).listings.drop(columns=[TARGET]), path)
    return path


def test_pyfunc_predicts_the_generated_csv_read_the_ordinary_way(
    logged: str, tmp_path: Path
) -> None:
    import mlflow

    model = mlflow.pyfunc.load_model(logged)
    small, large = pd.read_csv(_csv(tmp_path, 5)), pd.read_csv(_csv(tmp_path, 2_000))
    assert small["engine_cc"].dtype == np.int64  # no gap: pandas reads integers
    assert large["engine_cc"].dtype == np.float64  # a gap: pandas reads floats
    assert small["year"].dtype == np.int64
    for frame in (small, large):
        predicted = np.asarray(model.predict(frame))
        assert predicted.shape == (len(frame),)
        assert np.isfinite(predicted).all()


def test_pyfunc_takes_json_ints_floats_and_nulls(logged: str, tmp_path: Path) -> None:
    import mlflow

    records = json.loads(pd.read_csv(_csv(tmp_path, 3)).to_json(orient="records"))
    records[0] |= {"max_power_bhp": 121, "torque_nm": 153, "year": 2019.0}
    records[1] |= {"engine_cc": None, "seats": None, "color": None}
    model = mlflow.pyfunc.load_model(logged)
    as_floats = pd.DataFrame(records).astype({"year": "float64"})
    predicted = np.asarray(model.predict(pd.DataFrame(records)))
    assert np.isfinite(predicted).all()
    assert np.allclose(predicted, np.asarray(model.predict(as_floats)))


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_mlflow_models_predict_cli(logged: str, registry: str, tmp_path: Path, kind: str) -> None:
    source = _csv(tmp_path, 200)
    if kind == "json":
        records = json.loads(pd.read_csv(source).to_json(orient="records"))
        records[0]["max_power_bhp"] = 121
        source = tmp_path / "cars.json"
        source.write_text(json.dumps({"dataframe_records": records}))
    env = os.environ | {"MLFLOW_TRACKING_URI": registry}
    mlflow_cli = str(Path(sys.executable).parent / "mlflow")
    args = ["models", "predict", "-m", logged, "-i", str(source), "-t", kind]
    proc = subprocess.run(
        [mlflow_cli, *args, "--env-manager", "local"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    predictions = json.loads(proc.stdout.strip().splitlines()[-1])["predictions"]
    assert len(predictions) == 200
    assert all(p > 0 for p in predictions)
