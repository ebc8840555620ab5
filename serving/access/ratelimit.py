"""Fixed-window rate limits, counted in Redis so every worker and replica shares them.

Two ways of counting, chosen per rate by its size (``local_batch``, ``CARPRICE_RATELIMIT_BATCH``):

* **Local plus global** (the design of Envoy's limiters), for limits of at least 100 per window:
  each process counts hits in its own memory and settles them with Redis in batches (one
  ``INCRBY`` of the hits since the last settle, which answers the window's global count), in
  the background, at the latest every ``sync_interval`` seconds or after ``batch / 2`` hits.
  A request never waits for Redis, except when a process already holds ``batch`` unsettled hits
  for one key (then it waits for the settle in flight). ``batch`` is
  ``min(local_batch, limit // 100)``.

  **Slack.** A process admits a hit only while its view (the last global count it heard plus
  its own unsettled hits) is under the limit, and it never holds more than ``batch`` unsettled
  hits, so across P processes (workers of all replicas) at most
  ``limit + (P - 1) * batch`` requests get through in one window: e.g. 600/minute on 2 workers
  lets at most 606 through. It never admits fewer than the limit (its view never exceeds the
  true count). ``X-RateLimit-Remaining`` is this process's view.
* **Exact**, for smaller limits (the login limit, ``10/minute``) or ``local_batch=0``: one Redis
  round trip per check (a Lua script: INCR, set the window's expiry on the first hit, return
  count and time left).

Both use the short socket timeouts of ``redis_timeout`` and no retries. When Redis fails, a
circuit breaker opens: for ``breaker_cooldown`` seconds every check goes straight to a
per-process limiter (fail open to a *local* limit, never to no limit; counted in
``fallbacks``), so a dead Redis costs nothing per request; then one probe tries Redis again.

Without a Redis URL (neither ``ratelimit_url`` nor ``cache_url``) every limit, the login one
included, is counted per process: with N workers a client gets up to N times the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from redis.exceptions import RedisError

from serving import redis_client
from serving.access.principals import AccessError

log = logging.getLogger(__name__)

_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*(second|minute|hour|day)s?\s*", re.IGNORECASE)

# KEYS[1] = counter, ARGV[1] = window in ms. Returns {count, ms until the window resets}.
_HIT_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if n == 1 or ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
"""

# KEYS[1] = counter, ARGV[1] = hits to add, ARGV[2] = window in ms. Returns {count, ms left}.
_SETTLE_SCRIPT = """
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if n == tonumber(ARGV[1]) or ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {n, ttl}
"""


@dataclass(frozen=True, slots=True)
class Rate:
    """``limit`` requests per ``window`` seconds."""

    limit: int
    window: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``"600/minute"``, ``"10/second"``, ``"1000/hour"``, ``"50/5minutes"``, ``"5000/day"``."""
        match = _RATE.fullmatch(text)
        if match is None or int(match[1]) < 1:
            raise ValueError(f"bad rate limit {text!r}: expected e.g. '600/minute'")
        multiple = int(match[2]) if match[2] else 1
        if multiple < 1:
            raise ValueError(f"bad rate limit {text!r}: window must be positive")
        return cls(limit=int(match[1]), window=float(multiple * _UNITS[match[3].lower()]))


@dataclass(frozen=True, slots=True)
class RateState:
    """The outcome of one counted request."""

    limit: int
    remaining: int
    reset_after: float
    """Seconds until the window (and the count) resets."""

    @property
    def allowed(self) -> bool:
        """Whether this request is within the limit."""
        return self.remaining >= 0

    @property
    def retry_after(self) -> int:
        """Whole seconds to wait before retrying (``Retry-After``)."""
        return max(1, math.ceil(self.reset_after))

    def headers(self) -> dict[str, str]:
        """``X-RateLimit-Limit``/``-Remaining`` (and ``Retry-After`` once over the limit)."""
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.remaining)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


def _state(rate: Rate, count: int, reset_after: float) -> RateState:
    return RateState(limit=rate.limit, remaining=rate.limit - count, reset_after=reset_after)


class RateLimited(AccessError):  # noqa: N818 - named for what happened
    """Too many requests from one principal (or, on login, one client address)."""

    def __init__(self, state: RateState) -> None:
        super().__init__(f"rate limit of {state.limit} exceeded; retry in {state.retry_after}s")
        self.state = state


class Limiter(Protocol):
    """Counts a request against a bucket and says how much is left."""

    async def hit(self, key: str, rate: Rate) -> RateState:
        """Count one request for ``key`` under ``rate``."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class RedisClient(Protocol):
    """The part of ``redis.asyncio.Redis`` the limiter uses (typed here: the installed
    ``types-redis`` stubs predate redis 5 and lack ``aclose``)."""

    def register_script(self, script: str) -> Any:
        """A callable running ``script`` by SHA (loading it on NOSCRIPT)."""
        ...

    async def aclose(self) -> None:
        """Close the connection pool."""
        ...


class LocalLimiter:
    """Fixed windows counted in this process (the fallback, and the limiter without Redis)."""

    def __init__(
        self, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._windows: dict[str, tuple[float, int]] = {}
        self._max_keys = max_keys
        self._clock = clock

    def hit_now(self, key: str, rate: Rate) -> RateState:
        """Synchronous ``hit`` (it never waits)."""
        now = self._clock()
        window = self._windows.get(key)
        if window is None or window[0] <= now:
            if window is None and len(self._windows) >= self._max_keys:
                self._prune(now)
            window = (now + rate.window, 0)
        ends, count = window[0], window[1] + 1
        self._windows[key] = (ends, count)
        return _state(rate, count, ends - now)

    async def hit(self, key: str, rate: Rate) -> RateState:
        """Count one request for ``key`` under ``rate``."""
        return self.hit_now(key, rate)

    async def aclose(self) -> None:
        """Nothing to release."""

    def _prune(self, now: float) -> None:
        for key in [k for k, (ends, _) in self._windows.items() if ends <= now]:
            del self._windows[key]
        if len(self._windows) >= self._max_keys:  # a flood of live keys: forget the oldest
            for key in list(self._windows)[: max(1, self._max_keys // 10)]:
                del self._windows[key]


@dataclass(slots=True)
class _Bucket:
    """One key's window as this process sees it (local-plus-global counting)."""

    rate: Rate
    ends: float
    known: int = 0
    """The window's global count at the last settle (every process's settled hits)."""
    pending: int = 0
    """Hits admitted here since, not yet sent."""
    sending: int = 0
    """Hits in the settle in flight."""
    settling: asyncio.Future[None] | None = None

    @property
    def count(self) -> int:
        return self.known + self.pending + self.sending


class RedisLimiter:
    """Fixed windows counted in Redis (locally plus globally, or exactly; see the module
    docstring), with a circuit breaker onto a ``LocalLimiter``."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        namespace: str = "carprice:rl:",
        breaker_cooldown: float = 5.0,
        fallback: LocalLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
        local_batch: int = 100,
        sync_interval: float = 0.1,
        max_keys: int = 100_000,
    ) -> None:
        self.redis = redis
        self.namespace = namespace
        self.breaker_cooldown = breaker_cooldown
        self.fallback = fallback or LocalLimiter()
        self.local_batch = local_batch
        self.sync_interval = sync_interval
        self._max_keys = max_keys
        self._clock = clock
        self._script = redis.register_script(_HIT_SCRIPT)
        self._settle_script = redis.register_script(_SETTLE_SCRIPT)
        self._open_until = 0.0
        self._probing = False
        self._buckets: dict[str, _Bucket] = {}
        self._syncer: asyncio.Task[None] | None = None
        self._settles: set[asyncio.Task[None]] = set()
        self.fallbacks = 0
        """Requests counted by the local fallback because Redis was unavailable."""
        self.failures = 0
        """Redis calls that failed (each opens the breaker)."""

    @property
    def breaker_open(self) -> bool:
        """Whether checks currently bypass Redis."""
        return self._clock() < self._open_until or self._probing

    def batch(self, rate: Rate) -> int:
        """Most unsettled hits one process may hold for a key under ``rate`` (0 = exact)."""
        return min(self.local_batch, rate.limit // 100)

    async def hit(self, key: str, rate: Rate) -> RateState:
        """Count one request for ``key`` under ``rate`` in Redis, else locally."""
        if self._clock() < self._open_until or self._probing:
            self.fallbacks += 1
            return self.fallback.hit_now(key, rate)
        batch = self.batch(rate)
        if batch == 0:
            return await self._hit_exact(key, rate)
        return await self._hit_batched(key, rate, batch)

    # --- exact: one round trip per hit ---

    async def _hit_exact(self, key: str, rate: Rate) -> RateState:
        probe = self._open_until > 0.0
        self._probing = probe  # while the breaker is half-open, one request tries Redis
        try:
            result: Any = await self._script(keys=[self.namespace + key], args=[_ms(rate)])
            count, ttl_ms = int(result[0]), int(result[1])
        except (TimeoutError, RedisError, OSError) as exc:
            self._failed(exc, probe)
            self.fallbacks += 1
            return self.fallback.hit_now(key, rate)
        finally:
            if probe:
                self._probing = False
        if probe:
            self._recovered()
        return _state(rate, count, ttl_ms / 1000.0)

    def _failed(self, exc: BaseException, probe: bool) -> None:
        self.failures += 1
        if self._open_until == 0.0 or probe:
            log.warning("rate-limit Redis unavailable (%s); counting per process", exc)
        self._open_until = self._clock() + self.breaker_cooldown

    def _recovered(self) -> None:
        log.info("rate-limit Redis is back")
        self._open_until = 0.0

    # --- local plus global: counted here, settled in batches ---

    async def _hit_batched(self, key: str, rate: Rate, batch: int) -> RateState:
        if self._syncer is None:
            self._syncer = asyncio.create_task(self._sync_forever())
        while True:
            now = self._clock()
            bucket = self._buckets.get(key)
            if bucket is None or bucket.ends <= now or bucket.rate != rate:
                if bucket is None and len(self._buckets) >= self._max_keys:
                    self._prune(now)
                bucket = self._buckets[key] = _Bucket(rate, now + rate.window)
            if bucket.count >= rate.limit:
                return _state(rate, rate.limit + 1, bucket.ends - now)
            if bucket.pending + bucket.sending < batch:
                break
            if self._open_until > 0.0:  # Redis failed lately: do not wait on a probe
                self.fallbacks += 1
                return self.fallback.hit_now(key, rate)
            # This process holds a whole batch unsettled: wait for Redis's count.
            settling = bucket.settling or self._settle(key, bucket)
            await settling
            if self._clock() < self._open_until:  # the settle failed: count locally
                self.fallbacks += 1
                return self.fallback.hit_now(key, rate)
        bucket.pending += 1
        if bucket.pending * 2 >= batch and bucket.settling is None:
            self._settle(key, bucket)
        return _state(rate, bucket.count, bucket.ends - now)

    def _settle(self, key: str, bucket: _Bucket) -> asyncio.Future[None]:
        """Send ``bucket``'s pending hits to Redis (in the background); the settle's future."""
        task = asyncio.ensure_future(self._send(key, bucket))
        self._settles.add(task)
        task.add_done_callback(self._settles.discard)
        bucket.settling = task
        return task

    async def _send(self, key: str, bucket: _Bucket) -> None:
        hits, bucket.pending = bucket.pending, 0
        bucket.sending = hits
        probe = self._open_until > 0.0
        try:
            result: Any = await self._settle_script(
                keys=[self.namespace + key], args=[hits, _ms(bucket.rate)]
            )
            count, ttl_ms = int(result[0]), int(result[1])
        except (TimeoutError, RedisError, OSError) as exc:
            self._failed(exc, probe)
            self.fallbacks += hits  # these were only ever counted here
            return
        finally:
            bucket.sending = 0
            bucket.settling = None
        if probe:
            self._recovered()
        bucket.known = max(bucket.known, count)
        bucket.ends = self._clock() + ttl_ms / 1000.0  # Redis's window is the one that counts

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sync_interval)
            await self.sync()

    async def sync(self) -> None:
        """Settle every key's pending hits now (the background task does it periodically)."""
        if self._clock() < self._open_until:
            return
        waits = [
            bucket.settling or self._settle(key, bucket)
            for key, bucket in list(self._buckets.items())
            if bucket.pending or bucket.settling
        ]
        if waits:
            await asyncio.gather(*waits, return_exceptions=True)

    def _prune(self, now: float) -> None:
        for key in [k for k, b in self._buckets.items() if b.ends <= now and not b.pending]:
            del self._buckets[key]
        if len(self._buckets) >= self._max_keys:  # a flood of live keys: forget the oldest
            for key in list(self._buckets)[: max(1, self._max_keys // 10)]:
                del self._buckets[key]

    async def aclose(self) -> None:
        """Settle what is pending (briefly), then close the Redis connections."""
        if self._syncer is not None:
            self._syncer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._syncer
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await self.sync()
        await self.redis.aclose()


def _ms(rate: Rate) -> int:
    return int(rate.window * 1000)


def connect_redis(url: str, timeout: float) -> RedisClient:
    """A Redis client for the request path (:func:`serving.redis_client.connect`)."""
    return cast(RedisClient, redis_client.connect(url, timeout))
