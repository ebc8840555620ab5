"""Fixtures for the serving tests: a real MLflow registry with real (small) models, Redis.

The registry (SQLite in a temp dir) is built once per session with the pipeline's own code:
generated listings, ``pipelines.train.fit`` and ``log_run``, ``mlflow.register_model``. Its
versions:

1. good, alias ``production``; 2. good, other hyper-parameters (different prices);
3. signature that disagrees with the API (``engine_cc`` required);
4. loads, but predicts a negative price (fails the smoke test);
5. the good model with its ``model.skops`` file corrupted (fails to load).

Tests that move the alias use :func:`set_alias`; an autouse fixture puts ``production`` back on
version 1 afterwards.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from mlflow.types import ColSpec, DataType
from sklearn.dummy import DummyRegressor

from pipelines.contract import NUMERICAL, build_contract
from pipelines.params import Params, TrainParams
from pipelines.preprocess import clean
from pipelines.synthetic import generate
from pipelines.train import fit, log_run, signature_for, split_xy
from serving.main import create_app
from serving.settings import Settings

MODEL = "car-price"
REDIS_URL = "redis://127.0.0.1:6379/3"  # the serving tests' own DB number (auth tests use 2)
TEST_SECRET = "serving-tests-secret-" + "x" * 32

CAR: dict[str, Any] = {
    "brand": "Toyota",
    "model": "Corolla",
    "fuel_type": "Petrol",
    "transmission": "Manual",
    "body_type": "Sedan",
    "seller_type": "Dealer",
    "owner_type": "First",
    "color": "White",
    "year": 2019,
    "km_driven": 45000,
    "engine_cc": 1598,
    "max_power_bhp": 121.0,
    "mileage_kmpl": 16.5,
    "seats": 5,
    "torque_nm": 154.0,
    "doors": 4,
}
"""A complete, valid car."""

REQUIRED = ("brand", "model", "fuel_type", "transmission", "seller_type", "year", "km_driven", "doors")


@dataclass(frozen=True)
class TestRegistry:
    """The session's registry: where it is and which version is which."""

    uri: str
    root: Path
    good: str = "1"
    other: str = "2"
    bad_signature: str = "3"
    bad_smoke: str = "4"
    corrupt: str = "5"

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)


def _listings(rows: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    """Generated listings, cleaned as the pipeline cleans them (so all within the contract)."""
    df, _ = clean(generate(rows, seed).listings, build_contract(min_rows=1))
    return split_xy(df)


def _register(client: MlflowClient, model_uri: str) -> str:
    return str(mlflow.register_model(model_uri, MODEL).version)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestRegistry]:
    """Build the session registry (about 10 s: two small fits, five logged models)."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        exp = mlflow.create_experiment("car-price", artifact_location=(root / "artifacts").as_uri())
        mlflow.set_experiment(experiment_id=exp)
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        contract = build_contract(min_rows=1)
        x, y = _listings(2_000, seed=11)
        example = x.head(5).astype({c: "float64" for c in NUMERICAL})
        reference = x.head(200)
        metrics = {"holdout_mae": 1234.5, "cv_r2": 0.9}

        params1 = Params(train=TrainParams(max_iter=50, cv_folds=0))
        model1 = fit(params1.train, contract, x, y)
        run1 = log_run(model1, params1, contract, metrics, example, reference, {"stage": "test"})
        assert _register(client, run1["model_uri"]) == "1"

        params2 = Params(train=TrainParams(max_iter=25, learning_rate=0.2, cv_folds=0))
        model2 = fit(params2.train, contract, x, y)
        run2 = log_run(model2, params2, contract, metrics, example, reference, {"stage": "test"})
        assert _register(client, run2["model_uri"]) == "2"

        # 3: a signature the API does not send (engine_cc required).
        signature = copy.deepcopy(signature_for(contract))
        signature.inputs.inputs[[c.name for c in signature.inputs.inputs].index("engine_cc")] = (
            ColSpec(DataType.double, "engine_cc", required=True)
        )
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                model1,
                name="model",
                signature=signature,
                input_example=example,
                serialization_format="skops",
                skops_trusted_types=_trusted(model1),
                pip_requirements=["scikit-learn", "skops"],
            )
        assert _register(client, info.model_uri) == "3"

        # 4: loads and matches, but prices every car at -1.
        negative = DummyRegressor(strategy="constant", constant=-1.0).fit(x, y)
        run4 = log_run(negative, params1, contract, metrics, example, reference, {"stage": "test"})
        assert _register(client, run4["model_uri"]) == "4"

        # 5: the good model, its serialized file then overwritten.
        run5 = log_run(model1, params1, contract, metrics, example, reference, {"stage": "test"})
        assert _register(client, run5["model_uri"]) == "5"
        skops_files = list((root / "artifacts").rglob(f"{run5['model_id']}/**/model.skops"))
        assert len(skops_files) == 1
        skops_files[0].write_bytes(b"this is not a model")

        client.set_registered_model_alias(MODEL, "production", "1")
        yield TestRegistry(uri=uri, root=root)
    finally:
        mlflow.set_tracking_uri(previous)


def _trusted(model: Any) -> list[str]:
    import skops.io

    return list(skops.io.get_untrusted_types(data=skops.io.dumps(model)))


def set_alias(registry: TestRegistry, version: str, alias: str = "production") -> None:
    registry.client().set_registered_model_alias(MODEL, alias, version)


@pytest.fixture(autouse=True)
def _production_back_on_v1(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests that move ``production`` get it back on version 1 afterwards."""
    yield
    if "registry" in request.fixturenames:
        registry: TestRegistry = request.getfixturevalue("registry")
        client = registry.client()
        client.set_registered_model_alias(MODEL, "production", "1")
        for alias in client.get_registered_model(MODEL).aliases:
            if alias != "production":
                client.delete_registered_model_alias(MODEL, alias)


def make_settings(registry: TestRegistry | None, **overrides: Any) -> Settings:
    """Settings for a test app: the session registry, in-process cache, fast polling."""
    values: dict[str, Any] = {
        "env": "test",
        "jwt_secret": TEST_SECRET,
        "MLFLOW_TRACKING_URI": registry.uri if registry else "sqlite:////nonexistent/mlflow.db",
        "reload_interval": 0.2,
        "cache_url": None,
        "log_level": "INFO",
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.contextmanager
def running(app: FastAPI, *, ready: bool = True) -> Iterator[TestClient]:
    """A TestClient with the lifespan running; waits for a production model if ``ready``."""
    with TestClient(app, raise_server_exceptions=False) as client:
        if ready:
            models = app.state.models
            assert client.portal is not None
            assert client.portal.call(models.wait_ready, 30), models.status
        yield client


@pytest.fixture
def app(registry: TestRegistry) -> FastAPI:
    return create_app(make_settings(registry))


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """The app with version 1 in production, in-process cache."""
    with running(app) as c:
        yield c


@pytest.fixture
def redis_db() -> Iterator[redis.Redis]:
    """The tests' Redis DB, emptied before and after (skips if Redis is not running)."""
    r = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        r.ping()
    except redis.ConnectionError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    r.flushdb()
    yield r
    r.flushdb()
    r.close()


def cars(n: int, seed: int = 5) -> list[dict[str, Any]]:
    """``n`` distinct valid cars drawn like the training data (missing values as None)."""
    df, _ = _listings(n, seed)
    out = []
    for record in df.to_dict(orient="records"):
        car = {}
        for k, v in record.items():
            if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
                car[str(k)] = None
            elif isinstance(v, (int, float, np.integer, np.floating)):
                car[str(k)] = float(v)
            else:
                car[str(k)] = str(v)
        out.append(car)
    return out
