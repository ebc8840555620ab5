"""Fixtures of the drift tests (registered in tests/serving/conftest.py): their own MLflow
registry (one small model whose reference sample has 2,000 rows, like the pipeline's: above
Evidently's 1,000-row switch to distance tests) and a migrated prediction-log database."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from sqlalchemy import Engine
from threadpoolctl import threadpool_limits

from pipelines.contract import NUMERICAL, build_contract
from pipelines.params import Params, TrainParams
from pipelines.train import fit, log_run
from serving.inference.model import LoadedModel, load_version
from serving.inference.registry import Registry
from serving.store.database import create_db_engine, upgrade
from tests.serving.support import MODEL, listings


@dataclass(frozen=True)
class DriftRegistry:
    """A registry with ``car-price`` version 1 (alias production) and its run."""

    uri: str
    run_id: str

    def registry(self) -> Registry:
        return Registry(self.uri, MODEL, 10)


@pytest.fixture(scope="session")
def drift_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DriftRegistry]:
    root = tmp_path_factory.mktemp("drift-mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    previous = mlflow.get_tracking_uri()
    # The tracking URI only: the registry follows it. A registry URI set here would stay set
    # for the whole session, and other fixtures would register their models into this one.
    mlflow.set_tracking_uri(uri)
    try:
        exp = mlflow.create_experiment("drift", artifact_location=(root / "artifacts").as_uri())
        mlflow.set_experiment(experiment_id=exp)
        x, y = listings(2_500, seed=11)
        params = Params(train=TrainParams(max_iter=40, cv_folds=0))
        with threadpool_limits(1):
            model = fit(params.train, build_contract(min_rows=1), x, y)
        example = x.head(5).astype({c: "float64" for c in NUMERICAL})
        run = log_run(
            model, params, build_contract(min_rows=1), {"holdout_mae": 1500.0}, example,
            x.head(2_000), {"stage": "test"},
        )  # fmt: skip
        version = mlflow.register_model(run["model_uri"], MODEL).version
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.set_registered_model_alias(MODEL, "production", str(version))
        yield DriftRegistry(uri=uri, run_id=run["run_id"])
    finally:
        mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="session")
def drift_model(drift_registry: DriftRegistry) -> LoadedModel:
    """Version 1, loaded as the API loads it (it prices the logged cars)."""
    registry = drift_registry.registry()
    info = registry.get_version("1")
    assert info is not None
    return load_version(registry, info)


@pytest.fixture
def log_db(tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    """A migrated, empty prediction-log database (SQLite) and an engine on it."""
    url = f"sqlite:///{tmp_path}/log.db"
    upgrade(url)
    engine = create_db_engine(url)
    yield url, engine
    engine.dispose()
