"""The one prediction service behind every API version: cache -> model -> cache -> log, metrics.

Routers translate HTTP into validated :data:`~serving.inference.features.Row` lists and call
:meth:`PredictionService.predict`; they never touch the model or the cache themselves.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.errors import InvalidFeatures, LimitExceeded, PredictionFailed
from serving.inference.batching import MicroBatcher
from serving.inference.cache import PredictionCache
from serving.inference.cars import Cars
from serving.inference.features import Row
from serving.inference.model_store import ModelStore
from serving.monitoring import request_context
from serving.monitoring.metrics import CACHE_EVENTS, INFERENCE_SECONDS, PREDICTIONS
from serving.monitoring.prediction_log import PredictionLog

# One labels() look-up per series at import, not one per request (a few microseconds each).
_CACHE_HITS = CACHE_EVENTS.labels("hit")
_CACHE_MISSES = CACHE_EVENTS.labels("miss")


@dataclass(frozen=True, slots=True)
class Prediction:
    """Prices for a list of cars, which came from the cache, and the model that priced them."""

    prices: list[float]
    cached: list[bool]
    model_name: str
    model_version: str


class PredictionService:
    """Prices cars with the production model (or a pinned version), through the cache."""

    def __init__(
        self,
        models: ModelStore,
        cache: PredictionCache,
        batch_max: int,
        batcher: MicroBatcher | None = None,
        log: PredictionLog | None = None,
    ) -> None:
        self.models = models
        self.cache = cache
        self.batch_max = batch_max
        self.batcher = batcher or MicroBatcher(max_rows=16, wait_s=0.0)
        self.log = log

    async def predict(
        self,
        rows: Sequence[Row],
        version: str | None = None,
        *,
        request_id: str,
        api_version: str,
        caller: str,
    ) -> Prediction:
        """Price ``rows`` (validated cars: :class:`Cars`, or rows) with one model version, for
        ``caller`` (a user name or ``key:<id>``) in request ``request_id`` of ``api_version``
        (``v1``/``v2``).

        Cached prices are read for all rows in one call; only the misses go to the model, in one
        vectorised call, and are then written back in one call. The answer is counted and queued
        for the prediction log (never waited for) before it is returned.

        Raises:
            InvalidFeatures: no rows; ``LimitExceeded``: more than ``batch_max``.
            ModelNotReady, ModelNotFound, ModelUnservable, RegistryUnavailable: from the store.
            PredictionFailed: the model returned something that is not a price.
        """
        cars = Cars.from_rows(rows)
        if not cars.n:
            raise InvalidFeatures("send at least one car")
        if cars.n > self.batch_max:
            raise LimitExceeded(
                f"{cars.n} cars in one request; at most {self.batch_max} are accepted "
                "(CARPRICE_BATCH_MAX)"
            )
        model = await self.models.get(version)
        request_context.note_model_version(model.version)
        keys = self.cache.keys(model.name, model.version, cars)
        prices = await self.cache.get_many(keys)
        cached = [p is not None for p in prices]
        misses = [i for i, p in enumerate(prices) if p is None]
        hits = cars.n - len(misses)
        if hits:
            _CACHE_HITS.inc(hits)
        if misses:
            _CACHE_MISSES.inc(len(misses))
            started = time.perf_counter()
            predicted = await self.batcher.predict(model, cars.take(misses))
            INFERENCE_SECONDS.observe(time.perf_counter() - started)
            if predicted.shape != (len(misses),):
                raise PredictionFailed(
                    f"{model.name}/{model.version} returned {predicted.shape} prices for "
                    f"{len(misses)} cars"
                )
            unusable = ~(np.isfinite(predicted) & (predicted > 0))
            if unusable.any():
                first = misses[int(np.argmax(unusable))]
                raise PredictionFailed(
                    f"{model.name}/{model.version} returned no usable price for car {first}"
                )
            values = predicted.tolist()
            new_keys = keys
            if hits:
                for i, value in zip(misses, values, strict=True):
                    prices[i] = value
                new_keys = [keys[i] for i in misses]
            else:
                prices = values  # every car missed: the model's answer is the whole answer
            await self.cache.set_many(dict(zip(new_keys, values, strict=True)))
        priced: list[float] = prices  # type: ignore[assignment]  # every car has a price now
        if hits:
            _predictions(api_version, model.version, True).inc(hits)
        if misses:
            _predictions(api_version, model.version, False).inc(len(misses))
        if self.log is not None:
            self.log.record(
                request_id=request_id,
                api_version=api_version,
                caller=caller,
                model_name=model.name,
                model_version=model.version,
                columns=cars.columns,
                prices=priced,
                cached=cached,
            )
        return Prediction(
            prices=priced, cached=cached, model_name=model.name, model_version=model.version
        )


@functools.lru_cache(maxsize=256)
def _predictions(api_version: str, model_version: str, cached: bool) -> Any:
    return PREDICTIONS.labels(api_version, model_version, "true" if cached else "false")
