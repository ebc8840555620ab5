"""The prediction cache: Redis when ``CARPRICE_CACHE_URL`` is set, else an in-process LRU+TTL.

A key is the model name, the model version and the car's values, so a new model version never
answers with an old price. Each backend makes its own keys (:meth:`PredictionCache.key`): the
in-process cache a tuple (cheap to hash), Redis a string with the SHA-256 of the values under
``cache_namespace`` (so deployments, or test runs, can share one Redis).
Batches read and write all their rows in one round trip (``MGET``; a pipeline of
``SET ... EX``).

The cache is an optimisation and never a reason for a request to fail: every Redis call is
bounded by ``redis_timeout`` (socket and asyncio timeouts, no retries), a failure is logged,
counted and treated as a miss, and after ``cache_breaker_failures`` failures in a row a circuit
breaker skips Redis altogether for ``cache_breaker_reset`` seconds before trying it again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from serving.inference.features import Row, row_digest, row_values
from serving.monitoring.metrics import CACHE_EVENTS
from serving.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")


def cache_key(namespace: str, model_name: str, model_version: str, row: Row) -> str:
    """The Redis key of one car's price under one model version (``namespace`` first)."""
    return f"{namespace}{model_name}:{model_version}:{row_digest(row)}"


class PredictionCache(Protocol):
    """Where prices are remembered: look-ups and writes of many keys at once."""

    backend: str

    def key(self, model_name: str, model_version: str, row: Row) -> Any:
        """This cache's key for one car's price under one model version (opaque to callers)."""
        ...

    async def get_many(self, keys: Sequence[Any]) -> list[float | None]:
        """The cached price of each key (None for a miss), in order."""
        ...

    async def set_many(self, items: Mapping[Any, float]) -> None:
        """Remember each price under its key for the configured TTL."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class MemoryCache:
    """In-process LRU cache whose entries also expire after ``ttl`` seconds."""

    backend = "memory"

    def __init__(
        self, ttl: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def key(self, model_name: str, model_version: str, row: Row) -> Hashable:
        return (model_name, model_version, row_values(row))

    async def get_many(self, keys: Sequence[Hashable]) -> list[float | None]:
        now = self._clock()
        out: list[float | None] = []
        for key in keys:
            entry = self._entries.get(key)
            if entry is None:
                out.append(None)
            elif entry[0] <= now:
                del self._entries[key]
                out.append(None)
            else:
                self._entries.move_to_end(key)
                out.append(entry[1])
        return out

    async def set_many(self, items: Mapping[Hashable, float]) -> None:
        expires = self._clock() + self._ttl
        for key, value in items.items():
            self._entries[key] = (expires, value)
            self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def aclose(self) -> None:
        self._entries.clear()


class CircuitBreaker:
    """Closed: calls go through. Open (after ``failures`` in a row): calls are skipped.
    After ``reset_after`` seconds one trial call goes through (half-open): success closes the
    breaker, failure opens it again for another ``reset_after`` seconds."""

    def __init__(
        self, failures: int, reset_after: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._threshold = failures
        self._reset_after = reset_after
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> Literal["closed", "open", "half_open"]:
        if self._opened_at is None:
            return "closed"
        return "half_open" if self._trial_running else "open"

    def allow(self) -> bool:
        """Whether a call may go through now (claims the trial call when half-open)."""
        if self._opened_at is None:
            return True
        if not self._trial_running and self._clock() - self._opened_at >= self._reset_after:
            self._trial_running = True
            return True
        return False

    def success(self) -> None:
        if self._opened_at is not None:
            log.info("cache circuit breaker closed: Redis answers again")
        self._failures = 0
        self._opened_at = None
        self._trial_running = False

    def abandon(self) -> None:
        """A claimed call ended with neither answer (cancelled): let the next one try."""
        self._trial_running = False

    def failure(self) -> None:
        self._failures += 1
        if self._trial_running:
            self._trial_running = False
            self._opened_at = self._clock()
        elif self._opened_at is None and self._failures >= self._threshold:
            self._opened_at = self._clock()
            log.warning(
                "cache circuit breaker open: Redis skipped for %.1f s after %d failures",
                self._reset_after,
                self._failures,
            )


class _Redis(Protocol):
    """The part of ``redis.asyncio.Redis`` used here (the installed ``types-redis`` stubs
    predate redis 5 and lack ``aclose``)."""

    async def mget(self, keys: list[str]) -> list[bytes | None]: ...

    def pipeline(self, transaction: bool = ...) -> Any: ...

    async def aclose(self) -> None: ...


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class RedisCache:
    """Prices in Redis, shared by every worker and replica; failures degrade to misses."""

    backend = "redis"

    def __init__(
        self,
        url: str,
        ttl: int,
        timeout: float,
        breaker: CircuitBreaker,
        namespace: str,
    ) -> None:
        self._ttl = ttl
        self.namespace = namespace
        self._timeout = timeout
        self.breaker = breaker
        self.url = _redacted(url)
        # No retries, short socket timeouts: a request waits at most ``timeout`` on Redis.
        self._redis: _Redis = aioredis.Redis.from_url(  # type: ignore[assignment]
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )

    def key(self, model_name: str, model_version: str, row: Row) -> str:
        return cache_key(self.namespace, model_name, model_version, row)

    async def _call(self, op: str, call: Callable[[], Awaitable[T]]) -> T | None:
        if not self.breaker.allow():
            CACHE_EVENTS.labels("skipped").inc()
            return None
        try:
            async with asyncio.timeout(self._timeout):
                result = await call()
        except asyncio.CancelledError:
            self.breaker.abandon()
            raise
        except (RedisError, OSError, TimeoutError) as exc:
            self.breaker.failure()
            CACHE_EVENTS.labels("error").inc()
            log.warning(
                "cache %s failed, going on without it: %s",
                op,
                type(exc).__name__ if isinstance(exc, TimeoutError) else exc,
                extra={"fields": {"cache": self.url, "breaker": self.breaker.state}},
            )
            return None
        self.breaker.success()
        return result

    async def get_many(self, keys: Sequence[str]) -> list[float | None]:
        if not keys:
            return []
        raw = await self._call("read", lambda: self._redis.mget(list(keys)))
        if raw is None:
            return [None] * len(keys)
        return [_to_float(v) for v in raw]

    async def set_many(self, items: Mapping[str, float]) -> None:
        if not items:
            return

        async def write() -> None:
            pipe = self._redis.pipeline(transaction=False)
            for key, value in items.items():
                pipe.set(key, repr(value), ex=self._ttl)
            await pipe.execute()

        await self._call("write", write)

    async def aclose(self) -> None:
        await self._redis.aclose()


def _to_float(value: object) -> float | None:
    if value is None:
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def build_cache(settings: Settings) -> PredictionCache:
    """Redis when ``cache_url`` is set, else the in-process cache."""
    if settings.cache_url:
        breaker = CircuitBreaker(settings.cache_breaker_failures, settings.cache_breaker_reset)
        cache: PredictionCache = RedisCache(
            settings.cache_url,
            settings.cache_ttl,
            settings.redis_timeout,
            breaker,
            settings.cache_namespace,
        )
        log.info("prediction cache: Redis at %s", _redacted(settings.cache_url))
    else:
        cache = MemoryCache(settings.cache_ttl, settings.cache_max_entries)
        log.info("prediction cache: in-process, %d entries", settings.cache_max_entries)
    return cache
