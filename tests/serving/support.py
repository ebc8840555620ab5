"""Shared pieces of the serving tests (fixtures are in conftest.py): cars, settings, clients."""

from __future__ import annotations

import contextlib
import itertools
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from fastapi import FastAPI
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from pipelines.contract import build_contract
from pipelines.preprocess import clean
from pipelines.synthetic import generate
from pipelines.train import split_xy
from serving.api.schemas.v1 import EXAMPLE_CAR
from serving.inference.features import BY_NAME
from serving.settings import Settings
from tests.serving.services import namespace

MODEL = "car-price"
TEST_SECRET = "serving-tests-secret-" + "x" * 32

CAR: dict[str, Any] = dict(EXAMPLE_CAR)
"""A complete, valid car."""

REQUIRED = (
    "brand",
    "model",
    "fuel_type",
    "transmission",
    "seller_type",
    "year",
    "km_driven",
    "doors",
)
OPTIONAL = tuple(k for k in CAR if k not in REQUIRED)


@dataclass(frozen=True)
class ServingRegistry:
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

    def set_alias(self, version: str, alias: str = "production") -> None:
        self.client().set_registered_model_alias(MODEL, alias, version)


def listings(rows: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    """Generated listings, cleaned as the pipeline cleans them (so all within the contract)."""
    df, _ = clean(generate(rows, seed).listings, build_contract(min_rows=1))
    return split_xy(df)


def cars(n: int, seed: int = 5) -> list[dict[str, Any]]:
    """At most ``n`` distinct valid cars drawn like the training data (missing values None)."""
    df, _ = listings(n, seed)
    out = []
    for record in df.to_dict(orient="records"):
        car: dict[str, Any] = {}
        for k, v in record.items():
            if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
                car[str(k)] = None
            elif isinstance(v, int | float | np.integer | np.floating):
                # As a JSON client sends them: 2019 for an integer field, 16.5 for a float one.
                car[str(k)] = int(v) if BY_NAME[str(k)].kind == "integer" else float(v)
            else:
                car[str(k)] = str(v)
        out.append(car)
    return out


_unique = itertools.count(1)


def unique_car(**changes: Any) -> dict[str, Any]:
    """:data:`CAR` with a kilometre count no other call returns (a guaranteed cache miss)."""
    return CAR | {"km_driven": 100_000 + next(_unique)} | changes


def make_settings(registry: ServingRegistry | None, **overrides: Any) -> Settings:
    """Settings for a test app: the session registry, in-process cache, fast polling, Redis
    keys (if a test gives a ``cache_url``) under a namespace of its own."""
    values: dict[str, Any] = {
        "env": "test",
        "jwt_secret": TEST_SECRET,
        "MLFLOW_TRACKING_URI": registry.uri if registry else "sqlite:////nonexistent/mlflow.db",
        "reload_interval": 0.2,
        "cache_url": None,
        "cache_namespace": namespace("cache"),
        "ratelimit_namespace": namespace("rl"),
        # Each app gets its own user database; cheap hashing keeps the suite fast.
        "database_url": f"sqlite:///{tempfile.mkdtemp(prefix='carprice-users-')}/users.db",
        "bcrypt_rounds": 4,
        # Refusals answered at once: the tarpit has its own tests (test_hostile).
        "refusal_delay": 0.0,
    }
    values.update(overrides)
    return Settings(**values)


_users = itertools.count()


def grant_key(app: FastAPI, role: str = "predict") -> str:
    """Create a user with ``role`` in the running app's database and return a new API key."""
    from serving.access.principals import Role

    accounts = app.state.access.accounts
    name = f"client{next(_users)}"
    accounts.create_user(name, "a-long-test-password", Role(role))
    key: str = accounts.create_key(name, "tests").key
    return key


@contextlib.contextmanager
def running(app: FastAPI, *, ready: bool = True) -> Iterator[TestClient]:
    """A TestClient with the lifespan running and an API key of the predict role on every
    request; waits for a production model if ``ready``."""
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["X-API-Key"] = grant_key(app)
        if ready:
            models = app.state.models
            assert client.portal is not None
            assert client.portal.call(models.wait_ready, 30), models.status
        yield client


def error_of(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """Check ``response`` is an error in the one shape; return it with ``message`` added."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code", "details"}, body
    assert isinstance(body["error"], str)
    if code:
        assert body["code"] == code, body
    return dict(body) | {"message": body["error"]}
