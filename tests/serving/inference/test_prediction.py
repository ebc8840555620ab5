"""The prediction service: cache first, only the misses to the model, keys per version."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from serving.errors import InvalidFeatures, ModelNotReady, PredictionFailed
from serving.inference.cache import MemoryCache
from serving.inference.features import Row, make_row
from serving.inference.model import LoadedModel
from serving.inference.model_store import ModelStore
from serving.inference.prediction import PredictionService
from serving.inference.registry import Registry
from tests.serving.support import MODEL, ServingRegistry, cars

pytestmark = pytest.mark.timeout(120)  # a hang fails the test instead of the run


class Model:
    """A stand-in model that records what it was asked to price."""

    def __init__(self, version: str, prices: Any = None) -> None:
        self.version = version
        self.seen: list[int] = []
        self.prices = prices

    def loaded(self) -> LoadedModel:
        model = LoadedModel(MODEL, self.version, None, None, (), None, time.time())
        object.__setattr__(model, "predict", self.predict)
        return model

    def predict(self, rows: Sequence[Row]) -> np.ndarray:
        self.seen.append(len(rows))
        if self.prices is not None:
            return np.asarray(self.prices, dtype=float)
        return np.array([1000.0 + float(r["km_driven"] or 0) for r in rows])


def service_with(
    model: Model, registry: ServingRegistry, batch_max: int = 100
) -> PredictionService:
    store = ModelStore(
        Registry(registry.uri, MODEL, 5),
        alias="production",
        reload_interval=1,
        pinned_max=2,
        registry_timeout=5,
    )
    store._production = model.loaded()
    return PredictionService(store, MemoryCache(60, 1000), batch_max)


def rows(n: int, seed: int = 3) -> list[Row]:
    return [make_row(c) for c in cars(n, seed)]


WHO: dict[str, str] = {"request_id": "test", "api_version": "v1", "caller": "tester"}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_only_the_misses_go_to_the_model_in_one_call(registry: ServingRegistry) -> None:
    model = Model("1")
    service = service_with(model, registry)
    batch = rows(30)

    async def scenario() -> None:
        first = await service.predict(batch[:10], **WHO)
        assert first.cached == [False] * 10
        second = await service.predict(batch, **WHO)
        assert second.cached == [True] * 10 + [False] * 20
        assert second.prices[:10] == first.prices
        assert model.seen == [10, 20]
        third = await service.predict(batch, **WHO)
        assert all(third.cached)
        assert third.prices == second.prices
        assert model.seen == [10, 20]

    run(scenario())


def test_a_new_model_version_never_answers_from_the_old_versions_cache(
    registry: ServingRegistry,
) -> None:
    old, new = Model("1"), Model("2", prices=[42.0] * 5)
    service = service_with(old, registry)
    batch = rows(5)

    async def scenario() -> None:
        await service.predict(batch, **WHO)
        service.models._production = new.loaded()  # as the poller swaps
        result = await service.predict(batch, **WHO)
        assert result.model_version == "2"
        assert result.cached == [False] * 5
        assert result.prices == [42.0] * 5

    run(scenario())


def test_batch_limits(registry: ServingRegistry) -> None:
    service = service_with(Model("1"), registry, batch_max=3)
    with pytest.raises(InvalidFeatures, match="at least one"):
        run(service.predict([], **WHO))
    with pytest.raises(InvalidFeatures, match="at most 3"):
        run(service.predict(rows(4), **WHO))


@pytest.mark.parametrize("prices", [[float("nan")], [-5.0], [0.0], [1.0, 2.0]])
def test_a_model_that_returns_no_usable_price_is_a_prediction_failure(
    registry: ServingRegistry, prices: list[float]
) -> None:
    service = service_with(Model("1", prices=prices), registry)
    with pytest.raises(PredictionFailed):
        run(service.predict(rows(1), **WHO))


def test_no_production_model_is_not_ready(registry: ServingRegistry) -> None:
    service = service_with(Model("1"), registry)
    service.models._production = None
    with pytest.raises(ModelNotReady):
        run(service.predict(rows(1), **WHO))
