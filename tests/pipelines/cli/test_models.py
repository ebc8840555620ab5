"""`carprice models list|promote|rollback` against a real MLflow registry (SQLite in a temp dir)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pipelines.cli.models import app
from pipelines.contract import DataContract
from pipelines.evaluate import regression_metrics
from pipelines.params import Params, TrainParams
from pipelines.promotion import register_and_gate
from pipelines.train import fit, log_run, split_xy

runner = CliRunner()


def _register(listings: pd.DataFrame, contract: DataContract, max_iter: int) -> None:
    train, test = listings.iloc[:2_400], listings.iloc[2_400:]
    x, y = split_xy(train)
    params = Params(train=TrainParams(max_iter=max_iter, cv_folds=0))
    model = fit(params.train, contract, x, y)
    xt, yt = split_xy(test)
    metrics = regression_metrics(yt.to_numpy(), model.predict(xt))
    run = log_run(model, params, contract, {}, xt.head(3), xt.head(50), {})
    register_and_gate(run["model_uri"], run["run_id"], "car-price", metrics, xt, yt, 0.01)


def test_list_promote_rollback(
    registry: str,
    listings: pd.DataFrame,
    contract: DataContract,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _register(listings, contract, max_iter=150)  # v1 -> production
    _register(listings, contract, max_iter=3)  # v2 -> challenger (worse)
    monkeypatch.chdir(tmp_path)  # no params.yaml, no workspace holdout: recorded MAEs compared

    listed = runner.invoke(app, ["list"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert any(line.split()[:2] == ["1", "production"] for line in lines)
    assert any(line.split()[:2] == ["2", "challenger"] for line in lines)

    refused = runner.invoke(app, ["promote", "2"])
    assert refused.exit_code == 1
    assert "does not beat production MAE" in refused.output
    assert "add --force" in refused.output

    forced = runner.invoke(app, ["promote", "v2", "--force"])
    assert forced.exit_code == 0, forced.output
    assert "v2 -> @production" in forced.output

    back = runner.invoke(app, ["rollback"])
    assert back.exit_code == 0, back.output
    assert "v2 -> v1" in back.output
    assert "nothing to roll back to" in runner.invoke(app, ["rollback"]).output
    assert "already production" in runner.invoke(app, ["promote", "1"]).output

    unknown = runner.invoke(app, ["promote", "9"])
    assert unknown.exit_code == 1
    assert unknown.output.strip() == "error: car-price has no version 9"


def test_no_registry_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/none/mlflow.db")
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: no registry at")
    assert not (tmp_path / "none").exists()  # reported, not created


def test_no_production_yet(registry: str, monkeypatch: pytest.MonkeyPatch) -> None:
    result = runner.invoke(app, ["rollback"])
    assert result.exit_code == 1
    assert (
        result.output.strip() == "error: no registered model 'car-price' yet: run `dvc repro` first"
    )


def test_an_unreachable_server_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    started = time.perf_counter()
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: registry http://127.0.0.1:{port} is unreachable")
    assert len(result.output.strip().splitlines()) == 1
    assert time.perf_counter() - started < 60
