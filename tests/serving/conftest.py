"""Fixtures for the serving tests: a real MLflow registry with real (small) models, Redis.

The registry (SQLite in a temp dir) is built once per session with the pipeline's own code:
generated listings, ``pipelines.train.fit`` and ``log_run``, ``mlflow.register_model``. Its
versions:

1. good, alias ``production``; 2. good, other hyper-parameters (different prices);
3. a signature that disagrees with the API (``engine_cc`` required);
4. loads and matches, but predicts a negative price (fails the smoke test);
5. the good model with its ``model.skops`` file corrupted (fails to load).

Tests that move an alias get ``production`` back on version 1 (and other aliases removed)
afterwards.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from mlflow.types import ColSpec, DataType
from sklearn.dummy import DummyRegressor
from threadpoolctl import threadpool_limits

from pipelines.contract import NUMERICAL, build_contract
from pipelines.params import Params, TrainParams
from pipelines.train import fit, log_run, signature_for
from serving.main import create_app
from tests.serving.drift_support import drift_model, drift_registry, log_db  # noqa: F401
from tests.serving.live import ServerProcess, server_process
from tests.serving.services import cleanup_run, delete_namespace, namespace, redis_or_skip
from tests.serving.support import (
    MODEL,
    ServingRegistry,
    listings,
    make_settings,
    running,
)


def _register(model_uri: str) -> str:
    return str(mlflow.register_model(model_uri, MODEL).version)


def _trusted(model: Any) -> list[str]:
    import skops.io

    return list(skops.io.get_untrusted_types(data=skops.io.dumps(model)))


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingRegistry]:
    """Build the session registry (two small fits, five logged models)."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        # One OpenMP thread: on a busy 2-core machine the default spin-waits a 0.4 s fit
        # into 15 s.
        with threadpool_limits(1):
            registry = _build(root, uri)
        yield registry
    finally:
        mlflow.set_tracking_uri(previous)


def _build(root: Path, uri: str) -> ServingRegistry:
    exp = mlflow.create_experiment("car-price", artifact_location=(root / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=exp)
    contract = build_contract(min_rows=1)
    x, y = listings(2_000, seed=11)
    example = x.head(5).astype({c: "float64" for c in NUMERICAL})
    reference = x.head(200)
    metrics = {"holdout_mae": 1234.5, "cv_r2": 0.9}
    tags = {"stage": "test"}

    params1 = Params(train=TrainParams(max_iter=50, cv_folds=0))
    model1 = fit(params1.train, contract, x, y)
    run1 = log_run(model1, params1, contract, metrics, example, reference, tags)
    assert _register(run1["model_uri"]) == "1"

    params2 = Params(train=TrainParams(max_iter=25, learning_rate=0.2, cv_folds=0))
    model2 = fit(params2.train, contract, x, y)
    run2 = log_run(model2, params2, contract, metrics, example, reference, tags)
    assert _register(run2["model_uri"]) == "2"

    # 3: a signature the API does not match (engine_cc required).
    signature = copy.deepcopy(signature_for(contract))
    names = [c.name for c in signature.inputs.inputs]
    signature.inputs.inputs[names.index("engine_cc")] = ColSpec(
        DataType.double, "engine_cc", required=True
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
    assert _register(info.model_uri) == "3"

    # 4: loads and matches, but prices every car at -1.
    negative = DummyRegressor(strategy="constant", constant=-1.0).fit(x, y)
    run4 = log_run(negative, params1, contract, metrics, example, reference, tags)
    assert _register(run4["model_uri"]) == "4"

    # 5: the good model, its serialized file then overwritten.
    run5 = log_run(model1, params1, contract, metrics, example, reference, tags)
    assert _register(run5["model_uri"]) == "5"
    skops_files = list((root / "artifacts").rglob("model.skops"))
    corrupt = [f for f in skops_files if run5["model_id"] in str(f)]
    assert len(corrupt) == 1, skops_files
    corrupt[0].write_bytes(b"this is not a model")

    registry = ServingRegistry(uri=uri, root=root)
    registry.set_alias("1")
    return registry


@pytest.fixture(autouse=True)
def _production_back_on_v1(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests that move ``production`` get it back on version 1 afterwards."""
    yield
    if "registry" in request.fixturenames:
        registry: ServingRegistry = request.getfixturevalue("registry")
        client = registry.client()
        client.set_registered_model_alias(MODEL, "production", "1")
        for alias in client.get_registered_model(MODEL).aliases:
            if alias != "production":
                client.delete_registered_model_alias(MODEL, alias)


@pytest.fixture(scope="module")
def app(registry: ServingRegistry) -> FastAPI:
    """The app on the session registry (production = version 1), in-process cache.

    Shared by a module's tests (a model load each would add up): a test that needs a cache
    miss uses a car no other test sends (:func:`~tests.serving.support.unique_car`).
    """
    return create_app(make_settings(registry))


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    """A client of :func:`app` with its lifespan running and the model ready."""
    with running(app) as c:
        yield c


@pytest.fixture(scope="session", autouse=True)
def _nothing_left_in_redis_or_postgresql() -> Iterator[None]:
    """At the end of the run, delete its Redis keys and drop its databases (see services)."""
    yield
    cleanup_run()


@pytest.fixture(scope="session")
def served(
    registry: ServingRegistry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """``carprice serve`` (one worker) in its own process on the session registry."""
    with server_process(registry.uri, tmp_path_factory.mktemp("served")) as server:
        yield server


@pytest.fixture
def redis_db() -> Iterator[redis.Redis[bytes]]:
    """A client of the tests' Redis DB (skips if Redis is not running). Shared with other
    runs: a test reads and writes only under its own :func:`redis_namespace`."""
    client = redis_or_skip()
    yield client
    client.close()


@pytest.fixture
def redis_namespace(redis_db: redis.Redis[bytes]) -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted afterwards."""
    prefix = namespace("test")
    yield prefix
    delete_namespace(redis_db, prefix)
