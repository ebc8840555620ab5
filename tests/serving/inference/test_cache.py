"""The prediction cache: in-process LRU+TTL, the circuit breaker, and Redis (real, stopped,
black-holed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from serving.inference.cache import (
    CircuitBreaker,
    MemoryCache,
    RedisCache,
    TieredCache,
    build_cache,
    cache_key,
    quiet_setex,
)
from serving.inference.cars import Cars
from serving.inference.features import make_row
from serving.monitoring.metrics import CACHE_EVENTS
from tests.serving.live import BlackHole, closed_port
from tests.serving.services import REDIS_URL
from tests.serving.support import CAR, make_settings

pytestmark = pytest.mark.timeout(120)  # a hang fails the test instead of the run


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def counted(event: str) -> float:
    return float(CACHE_EVENTS.labels(event)._value.get())


def test_key_names_model_version_and_the_cars_digest() -> None:
    row = make_row(CAR)
    key = cache_key("carprice:price:", "car-price", "3", row)
    assert key.startswith("carprice:price:car-price:3:")
    assert key != cache_key("carprice:price:", "car-price", "4", row)
    assert key != cache_key("carprice:price:", "other", "3", row)
    assert key != cache_key("elsewhere:", "car-price", "3", row)


def test_redis_keys_are_under_the_configured_namespace() -> None:
    settings = make_settings(None, cache_url=REDIS_URL, cache_namespace="team-a:prices:")
    cache = build_cache(settings)
    assert isinstance(cache, TieredCache)
    key = cache.key("car-price", "3", make_row(CAR))
    assert key == cache_key("team-a:prices:", "car-price", "3", make_row(CAR))
    assert key.startswith("team-a:prices:car-price:3:")
    run(cache.aclose())


# --- in-process ---


def test_memory_cache_returns_what_was_set_until_the_ttl_passes() -> None:
    clock = Clock()
    cache = MemoryCache(ttl=10, max_entries=100, clock=clock)
    run(cache.set_many({"a": 1.5, "b": 2.5}))
    assert run(cache.get_many(["a", "x", "b"])) == [1.5, None, 2.5]
    clock.now += 9.9
    assert run(cache.get_many(["a"])) == [1.5]
    clock.now += 0.2
    assert run(cache.get_many(["a", "b"])) == [None, None]
    assert len(cache) == 0


def test_memory_cache_evicts_the_least_recently_used() -> None:
    cache = MemoryCache(ttl=100, max_entries=3, clock=Clock())
    run(cache.set_many({"a": 1.0, "b": 2.0, "c": 3.0}))
    run(cache.get_many(["a"]))  # a is now the most recent
    run(cache.set_many({"d": 4.0}))
    assert run(cache.get_many(["a", "b", "c", "d"])) == [1.0, None, 3.0, 4.0]


def test_memory_cache_setting_a_price_again_makes_it_the_most_recent() -> None:
    cache = MemoryCache(ttl=100, max_entries=3, clock=Clock())
    run(cache.set_many({"a": 1.0, "b": 2.0, "c": 3.0}))
    run(cache.set_many({"a": 1.5, "d": 4.0}))  # b is now the least recent: it goes
    assert run(cache.get_many(["a", "b", "c", "d"])) == [1.5, None, 3.0, 4.0]
    run(cache.set_many({str(i): float(i) for i in range(10)}))  # more than fit: the newest
    assert len(cache) == 3
    assert run(cache.get_many(["7", "8", "9", "a"])) == [7.0, 8.0, 9.0, None]


def test_without_a_url_the_cache_is_in_process() -> None:
    assert isinstance(build_cache(make_settings(None)), MemoryCache)
    cache = build_cache(make_settings(None, cache_url=REDIS_URL))
    assert isinstance(cache, TieredCache)
    run(cache.aclose())
    cache = build_cache(make_settings(None, cache_url=REDIS_URL, cache_l1_entries=0))
    assert isinstance(cache, RedisCache)
    run(cache.aclose())


# --- circuit breaker ---


def test_breaker_opens_after_consecutive_failures_and_tries_again_after_the_reset() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, reset_after=5, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    breaker.success()  # a success in between resets the count
    for _ in range(3):
        assert breaker.allow()
        breaker.failure()
    assert breaker.state == "open"
    assert not breaker.allow()
    clock.now += 5
    assert breaker.allow()  # the one trial call
    assert str(breaker.state) == "half_open"
    assert not breaker.allow()  # only one at a time
    breaker.failure()
    assert breaker.state == "open"
    assert not breaker.allow()
    clock.now += 5
    assert breaker.allow()
    breaker.success()
    assert str(breaker.state) == "closed"
    assert breaker.allow()
    assert breaker.allow()


def test_an_abandoned_trial_lets_the_next_call_try() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, reset_after=1, clock=clock)
    breaker.failure()
    clock.now += 1
    assert breaker.allow()
    breaker.abandon()
    assert breaker.allow()


# --- Redis ---


def _redis_cache(
    url: str, timeout: float = 0.1, failures: int = 3, reset: float = 30, namespace: str = "t:"
) -> RedisCache:
    breaker = CircuitBreaker(failures, reset)
    return RedisCache(url, ttl=60, timeout=timeout, breaker=breaker, namespace=namespace)


class Spy:
    """Counts the calls made on the Redis client it wraps."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return attr(*args, **kwargs)

        return call


def _command_calls(client: redis.Redis[bytes], command: str) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def test_redis_stores_prices_with_the_ttl_in_one_pipeline_without_replies(
    redis_db: redis.Redis[bytes], redis_namespace: str
) -> None:
    # commandstats counts the whole server's commands: other tests' may land between, never
    # fewer; the pipeline's own replies are what must be missing.
    setex = _command_calls(redis_db, "setex")

    async def scenario() -> None:
        cache = _redis_cache(REDIS_URL, timeout=2)
        spy = Spy(cache._redis)
        cache._redis = spy
        pool = spy.inner.connection_pool
        scripted: list[Any] = []
        cache._set_script = lambda **kwargs: scripted.append(kwargs)
        keys = [f"{redis_namespace}{i}" for i in range(500)]
        await cache.set_many(dict.fromkeys(keys[:10], 0.5))
        await cache.set_many({k: i + 0.25 for i, k in enumerate(keys)})  # the same turn
        assert spy.calls == []  # written behind the caller
        await cache.drain()
        assert cache._quiet_writes
        assert scripted == []
        (connection,) = pool._available_connections  # one connection, kept for reuse
        assert not await connection.can_read()  # no reply left unread on it
        got = await cache.get_many([*keys, f"{redis_namespace}missing"])
        assert got == [i + 0.25 for i in range(500)] + [None]
        assert spy.calls == ["mget"]  # the writes never went through a command of the client
        assert pool._available_connections == [connection]
        await cache.aclose()

    run(scenario())
    ttl = redis_db.ttl(f"{redis_namespace}0")
    assert 55 <= ttl <= 60
    assert _command_calls(redis_db, "setex") - setex >= 500


def test_quiet_setex_is_the_resp_of_the_commands_between_reply_off_and_on() -> None:
    import hiredis

    items = {"ns:car-price:3:ab": 12345.5, "ns:é:1:cd": 0.1 + 0.2}  # a non-ASCII key
    want = b"".join(
        [
            hiredis.pack_command(("CLIENT", "REPLY", "OFF")),
            *(hiredis.pack_command(("SETEX", k, "60", repr(v))) for k, v in items.items()),
            hiredis.pack_command(("CLIENT", "REPLY", "ON")),
        ]
    )
    assert quiet_setex(items, 60) == want


def test_a_redis_refusing_client_reply_gets_the_prices_by_script(
    redis_db: redis.Redis[bytes], redis_namespace: str
) -> None:
    user = f"carprice-test-{redis_namespace.strip(':').replace(':', '-')}"
    redis_db.acl_setuser(user, enabled=True, nopass=True, keys=["*"], commands=["+@all", "-client"])
    url = REDIS_URL.replace("redis://", f"redis://{user}:unused@")
    try:

        async def scenario() -> None:
            cache = _redis_cache(url, timeout=2)
            keys = [f"{redis_namespace}{i}" for i in range(50)]
            await cache.set_many({k: i + 0.5 for i, k in enumerate(keys[:25])})
            await cache.drain()
            assert not cache._quiet_writes  # refused once, then by script
            await cache.set_many({k: i + 0.5 for i, k in enumerate(keys) if i >= 25})
            await cache.drain()
            assert await cache.get_many(keys) == [i + 0.5 for i in range(50)]
            assert cache.breaker.state == "closed"
            await cache.aclose()

        run(scenario())
    finally:
        redis_db.acl_deluser(user)
    assert 55 <= redis_db.ttl(f"{redis_namespace}0") <= 60
    assert 55 <= redis_db.ttl(f"{redis_namespace}49") <= 60


def test_reads_of_one_event_loop_turn_share_one_mget(
    redis_db: redis.Redis[bytes], redis_namespace: str
) -> None:
    redis_db.set(f"{redis_namespace}3", b"3.5")

    async def scenario() -> list[list[float | None]]:
        cache = _redis_cache(REDIS_URL, timeout=2)
        spy = Spy(cache._redis)
        cache._redis = spy
        try:
            keys = [[f"{redis_namespace}{i}"] for i in range(10)]
            got = await asyncio.gather(*(cache.get_many(k) for k in keys))
            assert spy.calls == ["mget"]
            return list(got)
        finally:
            await cache.aclose()

    assert run(scenario()) == [[3.5] if i == 3 else [None] for i in range(10)]


def test_a_full_write_queue_drops_prices_instead_of_growing(
    redis_db: redis.Redis[bytes], redis_namespace: str
) -> None:
    dropped = counted("dropped")

    async def scenario() -> None:
        breaker = CircuitBreaker(3, 30)
        cache = RedisCache(REDIS_URL, 60, 2, breaker, namespace=redis_namespace, write_queue=5)
        await cache.set_many({f"{redis_namespace}{i}": 1.0 for i in range(4)})
        await cache.set_many({f"{redis_namespace}x{i}": 1.0 for i in range(2)})  # 6 > 5
        await cache.aclose()

    run(scenario())
    assert counted("dropped") - dropped == 2
    assert len(redis_db.keys(f"{redis_namespace}*")) == 4


def test_the_l1_answers_what_it_has_seen_and_asks_redis_for_the_rest(
    redis_db: redis.Redis[bytes], redis_namespace: str
) -> None:
    async def scenario() -> None:
        settings = make_settings(
            None, cache_url=REDIS_URL, cache_l1_entries=100, cache_namespace=redis_namespace
        )
        writer, reader = build_cache(settings), build_cache(settings)  # two workers
        assert isinstance(writer, TieredCache)
        assert isinstance(reader, TieredCache)
        rows = [make_row(CAR | {"km_driven": km}) for km in (1, 2)]
        keys = [writer.key("car-price", "7", row) for row in rows]
        assert keys[0] == cache_key(redis_namespace, "car-price", "7", rows[0])
        assert writer.keys("car-price", "7", Cars.from_rows(rows)) == keys
        await writer.set_many({keys[0]: 123.0})
        await writer.drain()
        spy = Spy(reader.l2._redis)
        reader.l2._redis = spy
        assert await reader.get_many(keys) == [123.0, None]  # from Redis
        assert await reader.get_many(keys[:1]) == [123.0]  # from its L1
        assert spy.calls == ["mget"]
        other_version = reader.key("car-price", "8", rows[0])
        assert await reader.get_many([other_version]) == [None]
        await writer.aclose()
        await reader.aclose()

    run(scenario())


def test_a_big_request_enters_the_l1_only_when_asked_for_again(
    redis_db: redis.Redis[bytes], redis_namespace: str
) -> None:
    """New prices of more than 1 % of the L1 go to Redis only: a batch does not push out the
    cars the worker is asked for again and again; found in Redis later, they enter the L1."""

    async def scenario() -> None:
        settings = make_settings(
            None, cache_url=REDIS_URL, cache_l1_entries=1000, cache_namespace=redis_namespace
        )
        cache = build_cache(settings)
        assert isinstance(cache, TieredCache)
        assert cache.admit_max == 10
        hot = f"{redis_namespace}hot"
        small = {f"{redis_namespace}small{i}": float(i) for i in range(10)}
        batch = {f"{redis_namespace}batch{i}": float(i) for i in range(995)}
        await cache.set_many({hot: 1.0})
        await cache.set_many(small)  # 10 = 1 % of the L1: in at once
        await cache.set_many(batch)
        await cache.drain()
        assert len(cache.l1) == 11  # the batch did not enter: the hot car is still there
        spy = Spy(cache.l2._redis)
        cache.l2._redis = spy
        assert await cache.get_many([hot, *small]) == [1.0, *small.values()]
        assert spy.calls == []  # all from the L1
        keys = list(batch)
        assert await cache.get_many(keys) == list(batch.values())  # from Redis ...
        assert spy.calls == ["mget"]
        assert len(cache.l1) == 1000  # ... and now in the L1 (the least recent went)
        assert await cache.get_many(keys) == list(batch.values())
        assert spy.calls == ["mget"]
        await cache.aclose()

    run(scenario())


def test_a_garbled_value_in_redis_is_a_miss(
    redis_db: redis.Redis[bytes], redis_namespace: str
) -> None:
    redis_db.set(f"{redis_namespace}bad", b"not a float")

    async def scenario() -> list[float | None]:
        cache = _redis_cache(REDIS_URL, timeout=2)
        try:
            return await cache.get_many([f"{redis_namespace}bad"])
        finally:
            await cache.aclose()

    assert run(scenario()) == [None]


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


@pytest.mark.parametrize("outage", ["stopped", "black-holed"])
def test_redis_down_means_misses_within_the_timeout_then_the_breaker_skips_it(
    outage: str, black_hole: BlackHole
) -> None:
    port = closed_port() if outage == "stopped" else black_hole.port
    errors_before = counted("error")
    skipped_before = counted("skipped")

    async def scenario() -> list[float]:
        cache = _redis_cache(f"redis://127.0.0.1:{port}/0", timeout=0.1, failures=3)
        durations = []
        for _ in range(10):
            started = time.perf_counter()
            assert await cache.get_many(["a", "b"]) == [None, None]
            await cache.set_many({"a": 1.0})
            durations.append(time.perf_counter() - started)
        await cache.aclose()
        return durations

    durations = run(scenario())
    # Each call is bounded by the timeout (0.1 s; the bound allows for a loaded machine, a
    # call without one would hang on the black hole); after 3 failures the breaker skips
    # Redis entirely (counted, not timed).
    assert max(durations) < 5, durations
    assert counted("error") - errors_before == 3
    assert counted("skipped") - skipped_before == 17
    if outage == "black-holed":
        assert black_hole.connections >= 1


def test_no_request_waits_for_the_breakers_trial_on_a_redis_that_never_answers(
    black_hole: BlackHole,
) -> None:
    errors_before = counted("error")

    async def scenario() -> tuple[float, str, str]:
        cache = _redis_cache(f"redis://127.0.0.1:{black_hole.port}/0", timeout=3, reset=0.05)
        for _ in range(3):
            cache.breaker.failure()  # as if Redis had just failed 3 times
        await asyncio.sleep(0.06)  # past the reset: the next read is the trial
        started = time.perf_counter()
        assert await cache.get_many(["a", "b"]) == [None, None]
        assert await cache.get_many(["c"]) == [None]  # skipped while the trial runs
        waited = time.perf_counter() - started
        during = str(cache.breaker.state)
        await cache.drain()  # the trial times out after 3 s
        after = str(cache.breaker.state)
        await cache.aclose()
        return waited, during, after

    waited, during, after = run(scenario())
    assert waited < 1.5, waited  # a request waiting on the trial would wait its 3 s
    assert (during, after) == ("half_open", "open")
    assert counted("error") - errors_before == 1


def test_redis_is_used_again_once_it_answers(redis_namespace: str) -> None:
    key = f"{redis_namespace}k"

    async def scenario() -> None:
        cache = _redis_cache(REDIS_URL, timeout=2, failures=1, reset=0.05)
        cache.breaker.failure()  # as if Redis had just failed
        assert cache.breaker.state == "open"
        assert await cache.get_many([key]) == [None]  # skipped, open
        await asyncio.sleep(0.06)
        await cache.set_many({key: 2.0})  # the trial call succeeds
        await cache.drain()
        assert str(cache.breaker.state) == "closed"
        assert await cache.get_many([key]) == [2.0]
        await cache.aclose()

    run(scenario())
