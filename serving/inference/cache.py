"""The prediction cache: Redis when ``CARPRICE_CACHE_URL`` is set, else an in-process LRU+TTL.

A key is the model name, the model version and the car's values, so a new model version never
answers with an old price. Each backend makes its own keys (:meth:`PredictionCache.key`): the
in-process cache a tuple (cheap to hash), Redis a string with the SHA-256 of the values (as JSON:
:func:`~serving.inference.features.values_bytes`) under ``cache_namespace`` (so deployments, or
test runs, can share one Redis).

With Redis, an in-process L1 (``CARPRICE_CACHE_L1_ENTRIES``) sits in front of it
(:class:`TieredCache`, keyed like Redis): a price for one model version never changes, so a car
this worker has seen is answered without a round trip, and a hot swap cannot serve a stale
price (the version is in the key). What goes to Redis goes in as few round trips as the load
allows: the reads of all requests of one event-loop turn are one ``MGET``, and writes are queued
and sent behind the requests, never waited for: one ``SETEX`` per price, all of a turn's in one
pipeline with Redis's replies switched off around it (:func:`quiet_setex`; a Redis that refuses
``CLIENT REPLY`` gets one script call setting every key instead); a write queue over
``CARPRICE_CACHE_WRITE_QUEUE`` prices drops the rest (counted ``dropped``).

The cache is an optimisation and never a reason for a request to fail: every Redis call is
bounded by ``redis_timeout`` (socket and asyncio timeouts, no retries), a failure is logged,
counted and treated as a miss, and after ``cache_breaker_failures`` failures in a row a circuit
breaker skips Redis altogether for ``cache_breaker_reset`` seconds before trying it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from itertools import repeat
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

from redis.exceptions import RedisError, ResponseError

from serving import redis_client
from serving.inference.cars import Cars
from serving.inference.features import Row, row_digest, row_values
from serving.monitoring.metrics import CACHE_EVENTS
from serving.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")


def local_keys(model_name: str, model_version: str, cars: Cars) -> list[Any]:
    """The in-process keys of ``cars``: (name, version, the car's values in feature order)."""
    return [(model_name, model_version, values) for values in cars.tuples()]


def cache_key(namespace: str, model_name: str, model_version: str, row: Row) -> str:
    """The Redis key of one car's price under one model version (``namespace`` first)."""
    return f"{namespace}{model_name}:{model_version}:{row_digest(row)}"


class PredictionCache(Protocol):
    """Where prices are remembered: look-ups and writes of many keys at once."""

    backend: str

    def key(self, model_name: str, model_version: str, row: Row) -> Any:
        """This cache's key for one car's price under one model version (opaque to callers)."""
        ...

    def keys(self, model_name: str, model_version: str, cars: Cars) -> list[Any]:
        """:meth:`key` of each car, computed a column at a time."""
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
    """In-process LRU cache whose entries also expire after ``ttl`` seconds (also the L1 in
    front of Redis)."""

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

    @property
    def max_entries(self) -> int:
        """Most entries kept (the least recently used go first)."""
        return self._max

    def key(self, model_name: str, model_version: str, row: Row) -> Hashable:
        return (model_name, model_version, row_values(row))

    def keys(self, model_name: str, model_version: str, cars: Cars) -> list[Any]:
        return local_keys(model_name, model_version, cars)

    async def get_many(self, keys: Sequence[Hashable]) -> list[float | None]:
        return self.get_now(keys)

    def get_now(self, keys: Sequence[Hashable]) -> list[float | None]:
        """``get_many`` without awaiting (it never waits)."""
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

    async def set_many(self, items: Mapping[Any, float]) -> None:
        self.set_now(items)

    def set_now(self, items: Mapping[Any, float]) -> None:
        """``set_many`` without awaiting (it never waits)."""
        entries = self._entries
        for key in entries.keys() & items.keys():  # set again: the most recent again
            entries.move_to_end(key)
        # New keys go last, the whole batch in one C loop.
        expiring = zip(repeat(self._clock() + self._ttl), items.values())
        entries.update(zip(items, expiring, strict=False))  # items: as long as its values
        for _ in range(len(entries) - self._max):
            entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    async def aclose(self) -> None:
        self.clear()


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

    def register_script(self, script: str) -> Any: ...

    @property
    def connection_pool(self) -> Any: ...

    async def aclose(self) -> None: ...


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


_REPLY_OFF = b"*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$3\r\nOFF\r\n"
_REPLY_ON = b"*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$2\r\nON\r\n"


def quiet_setex(items: Mapping[str, float], ttl: int) -> bytes:
    """``SETEX key ttl price`` for each item, as the bytes Redis reads (RESP), between
    ``CLIENT REPLY OFF`` and ``CLIENT REPLY ON``: Redis answers the whole pipeline with the one
    ``+OK`` of the last command.

    Why: inside Redis a pipelined ``SETEX`` costs ~3.0 us a key, the script's ``redis.call``
    per key ~4.2 (measured side by side on a private redis-server, 1,000-key batches), and the
    client reads one reply instead of parsing one per key (what made a plain pipeline cost ~10
    ms of client CPU for 1,000 keys); building these bytes costs ~0.5 us a key, as the script
    call's arguments did. An error of one ``SETEX`` (a Redis out of memory under
    ``noeviction``) goes unanswered: that price is simply not cached.
    """
    seconds = str(ttl)
    expiry = f"${len(seconds)}\r\n{seconds}\r\n"
    text = "".join(
        [
            f"*4\r\n$5\r\nSETEX\r\n${len(key.encode())}\r\n{key}\r\n{expiry}${len(price)}\r\n{price}\r\n"
            for key, price in zip(items, map(repr, items.values()), strict=True)
        ]
    )
    return b"".join((_REPLY_OFF, text.encode(), _REPLY_ON))


# The fallback for a Redis that refuses CLIENT REPLY (an ACL without it, a proxy): KEYS = the
# price keys, ARGV[1] = TTL in seconds, ARGV[2..] = the prices, one command for a whole batch.
_SET_SCRIPT = """
local ttl = ARGV[1]
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[i + 1], 'EX', ttl)
end
return #KEYS
"""

_Read = tuple[Sequence[str], "asyncio.Future[list[float | None]]"]


class RedisCache:
    """Prices in Redis, shared by every worker and replica; failures degrade to misses.

    Reads of one event-loop turn share one ``MGET``; writes are sent behind the requests
    (:meth:`set_many` returns at once; :meth:`drain` waits for what is queued).
    """

    backend = "redis"

    def __init__(
        self,
        url: str,
        ttl: int,
        timeout: float,
        breaker: CircuitBreaker,
        namespace: str,
        write_queue: int = 100_000,
    ) -> None:
        self._ttl = ttl
        self.namespace = namespace
        self._timeout = timeout
        self._write_queue = write_queue
        self.breaker = breaker
        self.url = _redacted(url)
        # No retries, short socket timeouts: a request waits at most ``timeout`` on Redis.
        self._redis: _Redis = redis_client.connect(url, timeout)  # type: ignore[assignment]
        self._set_script = self._redis.register_script(_SET_SCRIPT)
        self._quiet_writes = True  # until this Redis refuses CLIENT REPLY (_set_quietly)
        self._reads: list[_Read] = []
        self._writes: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def key(self, model_name: str, model_version: str, row: Row) -> str:
        return cache_key(self.namespace, model_name, model_version, row)

    def keys(self, model_name: str, model_version: str, cars: Cars) -> list[Any]:
        prefix = f"{self.namespace}{model_name}:{model_version}:"
        return [prefix + digest for digest in cars.digests()]

    async def _call(self, op: str, call: Callable[[], Awaitable[T]]) -> T | None:
        if not self.breaker.allow():
            CACHE_EVENTS.labels("skipped").inc()
            return None
        return await self._attempt(op, call)

    async def _attempt(self, op: str, call: Callable[[], Awaitable[T]]) -> T | None:
        """``call`` (the breaker has let it through), bounded and recorded by the breaker."""
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

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def get_many(self, keys: Sequence[str]) -> list[float | None]:
        if not keys:
            return []
        future: asyncio.Future[list[float | None]] = asyncio.get_running_loop().create_future()
        if not self._reads:
            asyncio.get_running_loop().call_soon(self._flush_reads)
        self._reads.append((keys, future))
        return await future

    def _flush_reads(self) -> None:
        reads, self._reads = self._reads, []
        if reads:
            self._spawn(self._read(reads))

    async def _read(self, reads: list[_Read]) -> None:
        keys = [key for batch, _ in reads for key in batch]
        if self.breaker.state == "open" and self.breaker.allow():
            # The breaker's trial after its reset: the requests do not wait for it (a Redis
            # that never answers held every request of that turn for the whole timeout, the
            # p99 of an outage); they take misses, and the trial closes or reopens the breaker.
            CACHE_EVENTS.labels("skipped").inc()
            self._spawn(self._trial(keys))
            for batch, future in reads:
                if not future.done():
                    future.set_result([None] * len(batch))
            return
        try:
            raw = await self._call("read", lambda: self._redis.mget(keys))
        except BaseException:  # cancelled at shutdown: nobody waits forever
            for _, future in reads:
                future.cancel()
            raise
        values: list[float | None] = (
            [None] * len(keys) if raw is None else [_to_float(v) for v in raw]
        )
        start = 0
        for batch, future in reads:
            if not future.done():  # a cancelled request
                future.set_result(values[start : start + len(batch)])
            start += len(batch)

    async def _trial(self, keys: list[str]) -> None:
        await self._attempt("read", lambda: self._redis.mget(keys))

    async def set_many(self, items: Mapping[str, float]) -> None:
        if not items:
            return
        if len(self._writes) + len(items) > self._write_queue:
            CACHE_EVENTS.labels("dropped").inc(len(items))
            return
        if not self._writes:
            asyncio.get_running_loop().call_soon(self._flush_writes)
        self._writes.update(items)

    def _flush_writes(self) -> None:
        writes, self._writes = self._writes, {}
        if writes:
            self._spawn(self._write(writes))

    async def _write(self, items: dict[str, float]) -> None:
        if self._quiet_writes:
            await self._call("write", lambda: self._set_quietly(items))
            return
        keys = list(items)
        args = [self._ttl, *map(repr, items.values())]
        await self._call("write", lambda: self._set_script(keys=keys, args=args))

    async def _set_quietly(self, items: dict[str, float]) -> None:
        """``items`` in one pipeline without replies (:func:`quiet_setex`), on a connection of
        the client's pool that is dropped, not reused, if anything goes wrong (replies of the
        pipeline may still be on their way)."""
        pool = self._redis.connection_pool
        connection = await pool.get_connection()
        try:
            await connection.send_packed_command(quiet_setex(items, self._ttl), False)
            await connection.read_response()
        except ResponseError as exc:
            # This Redis refused CLIENT REPLY OFF: it then answered every SETEX (they were
            # applied) and CLIENT REPLY ON, replies nobody reads on this connection.
            await connection.disconnect()
            self._quiet_writes = False
            log.info("Redis refused CLIENT REPLY (%s): cache writes go by script from now on", exc)
        except BaseException:
            await connection.disconnect()
            raise
        finally:
            await pool.release(connection)

    async def drain(self) -> None:
        """Wait until every queued read and write has been sent and answered (or failed)."""
        await asyncio.sleep(0)  # let the flushes scheduled for this turn run
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def aclose(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._timeout * 2):
                await self.drain()
        await self._redis.aclose()


L1_ADMIT_SHARE = 0.01
"""The largest share of the L1 that one request's new prices enter at once (see
:class:`TieredCache`)."""


class TieredCache:
    """An in-process L1 in front of Redis: hits never leave the process, misses ask Redis
    (one ``MGET`` per event-loop turn), new prices go to Redis (behind the request) and, for
    requests of up to :data:`L1_ADMIT_SHARE` of the L1, to the L1 as well.

    Both tiers use the Redis key (:meth:`RedisCache.keys`): one digest per car and request,
    computed once, whichever tier answers.

    Admission: the new prices of a bigger request (a batch of 1,000 cars is 10 % of the
    default L1) go to Redis only, and enter the L1 when a later request finds them there.
    Admitted at once, each such batch would push out that many of the cars this worker is
    asked for again and again (a few batches a second empty the L1 of them) for cars nobody
    has asked for twice yet; it would also cost the batch ~0.5 ms of LRU bookkeeping.
    """

    backend = "redis"

    def __init__(self, l1: MemoryCache, l2: RedisCache) -> None:
        self.l1 = l1
        self.l2 = l2
        self.admit_max = max(1, int(l1.max_entries * L1_ADMIT_SHARE))
        """Most new prices of one request that go to the L1 at once."""

    def key(self, model_name: str, model_version: str, row: Row) -> str:
        return self.l2.key(model_name, model_version, row)

    def keys(self, model_name: str, model_version: str, cars: Cars) -> list[Any]:
        return self.l2.keys(model_name, model_version, cars)

    async def get_many(self, keys: Sequence[str]) -> list[float | None]:
        prices = self.l1.get_now(keys)
        misses = [i for i, price in enumerate(prices) if price is None]
        if misses:
            remote = await self.l2.get_many([keys[i] for i in misses])
            found = {}
            for i, price in zip(misses, remote, strict=True):
                if price is not None:
                    prices[i] = price
                    found[keys[i]] = price
            if found:
                self.l1.set_now(found)
        return prices

    async def set_many(self, items: Mapping[str, float]) -> None:
        if len(items) <= self.admit_max:
            self.l1.set_now(items)
        await self.l2.set_many(items)

    async def drain(self) -> None:
        """Wait for the queued Redis writes."""
        await self.l2.drain()

    async def aclose(self) -> None:
        self.l1.clear()
        await self.l2.aclose()


def _to_float(value: object) -> float | None:
    if value is None:
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def build_cache(settings: Settings) -> PredictionCache:
    """Redis (behind an in-process L1 unless ``cache_l1_entries`` is 0) when ``cache_url`` is
    set, else the in-process cache."""
    if settings.cache_url:
        breaker = CircuitBreaker(settings.cache_breaker_failures, settings.cache_breaker_reset)
        redis = RedisCache(
            settings.cache_url,
            settings.cache_ttl,
            settings.redis_timeout,
            breaker,
            settings.cache_namespace,
            settings.cache_write_queue,
        )
        cache: PredictionCache = redis
        if settings.cache_l1_entries:
            cache = TieredCache(MemoryCache(settings.cache_ttl, settings.cache_l1_entries), redis)
        log.info(
            "prediction cache: Redis at %s, in-process L1 of %d entries",
            _redacted(settings.cache_url),
            settings.cache_l1_entries,
        )
    else:
        cache = MemoryCache(settings.cache_ttl, settings.cache_max_entries)
        log.info("prediction cache: in-process, %d entries", settings.cache_max_entries)
    return cache
