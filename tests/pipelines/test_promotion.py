"""The promotion gate against a real MLflow registry (SQLite in a temp dir)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from pipelines.contract import DataContract
from pipelines.evaluate import regression_metrics
from pipelines.params import Params, TrainParams
from pipelines.promotion import (
    CHALLENGER,
    PRODUCTION,
    Decision,
    PromotionError,
    decide,
    history,
    move_production,
    register_and_gate,
    rollback,
)
from pipelines.train import fit, log_run, split_xy


def test_decide_without_production_promotes() -> None:
    assert decide(100.0, None, 0.01) == (True, "no production model yet")


@pytest.mark.parametrize(
    ("candidate", "production", "promoted"),
    [(98.0, 100.0, True), (99.0, 100.0, False), (99.5, 100.0, False), (120.0, 100.0, False)],
)
def test_decide_needs_the_margin(candidate: float, production: float, promoted: bool) -> None:
    ok, reason = decide(candidate, production, 0.01)
    assert ok is promoted
    assert f"{production:.2f}" in reason


def _candidate(
    listings: pd.DataFrame, contract: DataContract, max_iter: int
) -> tuple[dict[str, str], float]:
    train, test = listings.iloc[:2_400], listings.iloc[2_400:]
    x, y = split_xy(train)
    params = Params(train=TrainParams(max_iter=max_iter, cv_folds=0))
    model = fit(params.train, contract, x, y)
    xt, yt = split_xy(test)
    mae = regression_metrics(yt.to_numpy(), model.predict(xt))["mae"]
    run = log_run(model, params, contract, {"cv_mae": mae}, xt.head(3), xt.head(50), {"test": "1"})
    return run, mae


def _metrics(mae: float) -> dict[str, float]:
    return {"mae": mae, "rmse": mae * 1.5, "r2": 0.9}


def test_gate_promotes_first_then_keeps_production_for_a_worse_model(
    registry: str, listings: pd.DataFrame, contract: DataContract
) -> None:
    from mlflow import MlflowClient

    _, test = listings.iloc[:2_400], listings.iloc[2_400:]
    xt, yt = split_xy(test)
    good, good_mae = _candidate(listings, contract, max_iter=150)
    first = register_and_gate(
        good["model_uri"], good["run_id"], "car-price", _metrics(good_mae), xt, yt, 0.01
    )
    assert first.promoted
    assert first.candidate_version == "1"
    assert first.alias == PRODUCTION

    worse, worse_mae = _candidate(listings, contract, max_iter=3)
    assert worse_mae > good_mae
    second = register_and_gate(
        worse["model_uri"], worse["run_id"], "car-price", _metrics(worse_mae), xt, yt, 0.01
    )
    assert not second.promoted
    assert second.alias == CHALLENGER
    assert second.production_version == "1"
    assert second.production_mae == pytest.approx(good_mae, rel=1e-6)  # scored on the same rows

    client = MlflowClient()
    assert str(client.get_model_version_by_alias("car-price", PRODUCTION).version) == "1"
    assert str(client.get_model_version_by_alias("car-price", CHALLENGER).version) == "2"
    tags = client.get_model_version("car-price", "2").tags
    assert tags["gate_decision"] == "challenger"
    assert float(tags["production_mae_at_gate"]) == pytest.approx(good_mae, rel=1e-4)
    assert tags["run_id"] == worse["run_id"]


def test_production_is_scored_again_only_on_other_holdout_rows(
    registry: str, listings: pd.DataFrame, contract: DataContract
) -> None:
    from mlflow import MlflowClient

    from pipelines.promotion import HOLDOUT_TAG, holdout_fingerprint

    xt, yt = split_xy(listings.iloc[2_400:])
    runs = {n: _candidate(listings, contract, max_iter=n) for n in (150, 3)}
    (good, good_mae), (worse, worse_mae) = runs[150], runs[3]

    def gate(x: pd.DataFrame, y: pd.Series) -> Decision:
        return register_and_gate(
            worse["model_uri"], worse["run_id"], "car-price", _metrics(worse_mae), x, y, 0.01
        )

    register_and_gate(
        good["model_uri"], good["run_id"], "car-price", _metrics(good_mae), xt, yt, 0.01
    )
    same = gate(xt, yt)  # same rows: the MAE recorded at registration (4 decimals), no new score
    assert same.production_mae == float(f"{good_mae:.4f}") != good_mae
    x_other, y_other = xt.iloc[:300], yt.iloc[:300]  # other rows: production is scored on them
    assert holdout_fingerprint(x_other, y_other) != holdout_fingerprint(xt, yt)
    other = gate(x_other, y_other)
    served = mlflow_predict(good["model_uri"], x_other)
    assert other.production_mae == pytest.approx(float(abs(served - y_other.to_numpy()).mean()))
    tags = MlflowClient().get_model_version("car-price", other.candidate_version).tags
    assert tags[HOLDOUT_TAG] == holdout_fingerprint(x_other, y_other)


def mlflow_predict(model_uri: str, x: pd.DataFrame) -> Any:
    import mlflow

    return mlflow.pyfunc.load_model(model_uri).predict(x)


def test_an_experiment_that_passes_the_gate_stays_a_challenger(
    registry: str, listings: pd.DataFrame, contract: DataContract
) -> None:
    from mlflow import MlflowClient

    xt, yt = split_xy(listings.iloc[2_400:])
    worse, worse_mae = _candidate(listings, contract, max_iter=3)
    register_and_gate(
        worse["model_uri"], worse["run_id"], "car-price", _metrics(worse_mae), xt, yt, 0.01
    )
    good, good_mae = _candidate(listings, contract, max_iter=150)
    decision = register_and_gate(
        good["model_uri"],
        good["run_id"],
        "car-price",
        _metrics(good_mae),
        xt,
        yt,
        0.01,
        experiment="sunny-fern",
        baseline_rev="abc123",
    )
    assert decision.passed
    assert not decision.promoted
    assert decision.alias == CHALLENGER
    assert "never moves production" in decision.reason
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("car-price", PRODUCTION).version) == "1"
    tags = client.get_model_version("car-price", "2").tags
    assert tags["gate_passed"] == "true"
    assert tags["gate_decision"] == "challenger"
    assert tags["dvc_exp_name"] == "sunny-fern"
    assert tags["dvc_exp_baseline_rev"] == "abc123"


def test_moves_are_kept_in_the_history_and_rollback_walks_it_back(
    registry: str, listings: pd.DataFrame, contract: DataContract
) -> None:
    from mlflow import MlflowClient

    xt, yt = split_xy(listings.iloc[2_400:])
    for max_iter in (3, 20, 150):
        run, mae = _candidate(listings, contract, max_iter=max_iter)
        register_and_gate(run["model_uri"], run["run_id"], "car-price", _metrics(mae), xt, yt, 0.01)
    client = MlflowClient()
    assert history(client, "car-price") == ["1", "2", "3"]
    move_production(client, "car-price", "1", "by hand")
    assert history(client, "car-price") == ["1", "2", "3", "1"]
    assert rollback(client, "car-price") == ("1", "3")
    assert rollback(client, "car-price") == ("3", "2")
    assert str(client.get_model_version_by_alias("car-price", PRODUCTION).version) == "2"
    assert client.get_model_version("car-price", "3").tags["rolled_back"] == "true"
    assert rollback(client, "car-price") == ("2", "1")
    with pytest.raises(PromotionError, match="nothing to roll back to"):
        rollback(client, "car-price")
