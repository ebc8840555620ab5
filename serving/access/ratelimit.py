"""Fixed-window rate limits, counted in Redis so every worker and replica shares them.

One Redis round trip per check (a Lua script: INCR, set the window's expiry on the first hit,
return count and time left), with the short socket timeouts of ``redis_timeout`` and no retries.
When Redis fails, a circuit breaker opens: for ``breaker_cooldown`` seconds every check goes
straight to a per-process limiter (fail open to a *local* limit, never to no limit; counted in
``fallbacks``), so a dead Redis costs nothing per request; then one probe tries Redis again.

Without a Redis URL (neither ``ratelimit_url`` nor ``cache_url``) every limit, the login one
included, is counted per process: with N workers a client gets up to N times the limit.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

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


class RedisLimiter:
    """Fixed windows counted in Redis, with a circuit breaker onto a ``LocalLimiter``."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        namespace: str = "carprice:rl:",
        breaker_cooldown: float = 5.0,
        fallback: LocalLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.namespace = namespace
        self.breaker_cooldown = breaker_cooldown
        self.fallback = fallback or LocalLimiter()
        self._clock = clock
        self._script = redis.register_script(_HIT_SCRIPT)
        self._open_until = 0.0
        self._probing = False
        self.fallbacks = 0
        """Requests counted by the local fallback because Redis was unavailable."""
        self.failures = 0
        """Redis calls that failed (each opens the breaker)."""

    @property
    def breaker_open(self) -> bool:
        """Whether checks currently bypass Redis."""
        return self._clock() < self._open_until or self._probing

    async def hit(self, key: str, rate: Rate) -> RateState:
        """Count one request for ``key`` under ``rate`` in Redis, else locally."""
        if self._clock() < self._open_until or self._probing:
            self.fallbacks += 1
            return self.fallback.hit_now(key, rate)
        probe = self._open_until > 0.0
        self._probing = probe  # while the breaker is half-open, one request tries Redis
        try:
            result: Any = await self._script(keys=[self.namespace + key], args=[_ms(rate)])
            count, ttl_ms = int(result[0]), int(result[1])
        except (TimeoutError, RedisError, OSError) as exc:
            self.failures += 1
            self.fallbacks += 1
            if self._open_until == 0.0 or probe:
                log.warning("rate-limit Redis unavailable (%s); counting per process", exc)
            self._open_until = self._clock() + self.breaker_cooldown
            return self.fallback.hit_now(key, rate)
        finally:
            if probe:
                self._probing = False
        if probe:
            log.info("rate-limit Redis is back")
            self._open_until = 0.0
        return _state(rate, count, ttl_ms / 1000.0)

    async def aclose(self) -> None:
        """Close the Redis connections."""
        await self.redis.aclose()


def _ms(rate: Rate) -> int:
    return int(rate.window * 1000)


def connect_redis(url: str, timeout: float) -> RedisClient:
    """A Redis client for the request path: short timeouts, no retries, no health pings."""
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    client = Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )
    return cast(RedisClient, client)
