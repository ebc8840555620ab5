"""The one prediction service behind every API version: cache -> model -> cache -> log, metrics.

Routers translate HTTP into validated :data:`~serving.inference.features.Row` lists and call
:meth:`PredictionService.predict`; they never touch the model or the cache themselves.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from serving.errors import InvalidFeatures, LimitExceeded, PredictionFailed
from serving.inference.batching import MicroBatcher
from serving.inference.cache import PredictionCache
from serving.inference.features import Row, row_values
from serving.inference.model_store import ModelStore
from serving.monitoring import request_context
from serving.monitoring.metrics import CACHE_EVENTS, INFERENCE_SECONDS, PREDICTIONS
from serving.monitoring.prediction_log import PredictionLog


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
        """Price ``rows`` (validated cars) with one model version, for ``caller`` (a user name or
        ``key:<id>``) in request ``request_id`` of ``api_version`` (``v1``/``v2``).

        Cached prices are read for all rows in one call; only the misses go to the model, in one
        vectorised call, and are then written back in one call. The answer is counted and queued
        for the prediction log (never waited for) before it is returned.

        Raises:
            InvalidFeatures: no rows; ``LimitExceeded``: more than ``batch_max``.
            ModelNotReady, ModelNotFound, ModelUnservable, RegistryUnavailable: from the store.
            PredictionFailed: the model returned something that is not a price.
        """
        if not rows:
            raise InvalidFeatures("send at least one car")
        if len(rows) > self.batch_max:
            raise LimitExceeded(
                f"{len(rows)} cars in one request; at most {self.batch_max} are accepted "
                "(CARPRICE_BATCH_MAX)"
            )
        model = await self.models.get(version)
        request_context.note_model_version(model.version)
        key = self.cache.key
        keys = [key(model.name, model.version, row) for row in rows]
        prices = await self.cache.get_many(keys)
        cached = [p is not None for p in prices]
        misses = [i for i, p in enumerate(prices) if p is None]
        hits = len(rows) - len(misses)
        if hits:
            CACHE_EVENTS.labels("hit").inc(hits)
        if misses:
            CACHE_EVENTS.labels("miss").inc(len(misses))
            miss_rows = [rows[i] for i in misses]
            started = time.perf_counter()
            predicted = await self.batcher.predict(model, miss_rows)
            INFERENCE_SECONDS.observe(time.perf_counter() - started)
            if predicted.shape != (len(miss_rows),):
                raise PredictionFailed(
                    f"{model.name}/{model.version} returned {predicted.shape} prices for "
                    f"{len(miss_rows)} cars"
                )
            fresh: dict[Any, float] = {}
            for i, value in zip(misses, predicted.tolist(), strict=True):
                if not math.isfinite(value) or value <= 0:
                    raise PredictionFailed(
                        f"{model.name}/{model.version} returned no usable price for car {i}"
                    )
                prices[i] = value
                fresh[keys[i]] = value
            await self.cache.set_many(fresh)
        priced = [p for p in prices if p is not None]  # every row has a price by now
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
                columns=tuple(zip(*map(row_values, rows), strict=True)),
                prices=priced,
                cached=cached,
            )
        return Prediction(
            prices=priced, cached=cached, model_name=model.name, model_version=model.version
        )


@functools.lru_cache(maxsize=256)
def _predictions(api_version: str, model_version: str, cached: bool) -> Any:
    # One labels() look-up per series, not per request (a few microseconds each).
    return PREDICTIONS.labels(api_version, model_version, "true" if cached else "false")
