"""Rate limits: parsing, the per-process limiter, and the Redis limiter with its circuit breaker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from serving.access.ratelimit import (
    LocalLimiter,
    Rate,
    RateState,
    RedisLimiter,
    connect_redis,
)
from tests.serving import services
from tests.serving.auth_support import RedisProxy
from tests.serving.services import REDIS_URL, delete_namespace, redis_or_skip

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("text", "limit", "window"),
    [
        ("600/minute", 600, 60.0),
        ("10/second", 10, 1.0),
        ("1000/hour", 1000, 3600.0),
        ("5000/day", 5000, 86400.0),
        (" 50 / 5 minutes ", 50, 300.0),
        ("3/Minutes", 3, 60.0),
    ],
)
def test_parse(text: str, limit: int, window: float) -> None:
    assert Rate.parse(text) == Rate(limit, window)


@pytest.mark.parametrize("text", ["", "600", "0/minute", "10/fortnight", "-1/second", "5/0second"])
def test_parse_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="rate limit"):
        Rate.parse(text)


def test_state_headers() -> None:
    ok = RateState(limit=10, remaining=3, reset_after=12.2)
    assert ok.allowed
    assert ok.headers() == {"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "3"}
    over = RateState(limit=10, remaining=-1, reset_after=12.2)
    assert not over.allowed
    assert over.headers() == {
        "X-RateLimit-Limit": "10",
        "X-RateLimit-Remaining": "0",
        "Retry-After": "13",
    }
    assert RateState(limit=1, remaining=-1, reset_after=0.001).retry_after == 1


def test_local_limiter_fixed_window() -> None:
    clock = Clock()
    limiter = LocalLimiter(clock=clock)
    rate = Rate(3, 60)
    assert [limiter.hit_now("a", rate).remaining for _ in range(4)] == [2, 1, 0, -1]
    assert limiter.hit_now("b", rate).remaining == 2  # buckets are independent
    clock.now += 59
    assert not limiter.hit_now("a", rate).allowed
    clock.now += 1
    state = limiter.hit_now("a", rate)
    assert state.allowed
    assert state.remaining == 2
    assert state.reset_after == 60


def test_local_limiter_memory_is_bounded() -> None:
    clock = Clock()
    limiter = LocalLimiter(max_keys=100, clock=clock)
    for i in range(1000):
        limiter.hit_now(f"k{i}", Rate(5, 60))
    assert len(limiter._windows) <= 100


@pytest.fixture
def namespace() -> Iterator[str]:
    client = redis_or_skip()
    prefix = services.namespace("rl")
    yield prefix
    delete_namespace(client, prefix)
    client.close()


@pytest.fixture
async def redis_limiter(namespace: str) -> AsyncIterator[RedisLimiter]:
    limiter = RedisLimiter(connect_redis(REDIS_URL, 5), namespace=namespace)
    yield limiter
    await limiter.aclose()


async def test_redis_limiter_counts_in_redis(redis_limiter: RedisLimiter, namespace: str) -> None:
    rate = Rate(3, 60)
    states = [await redis_limiter.hit("user:1", rate) for _ in range(4)]
    assert [s.remaining for s in states] == [2, 1, 0, -1]
    assert 59 < states[0].reset_after <= 60
    assert redis_limiter.fallbacks == 0
    client = redis_or_skip()
    assert client.get(namespace + "user:1") == b"4"
    assert 59_000 < client.pttl(namespace + "user:1") <= 60_000


async def test_window_resets_in_redis(redis_limiter: RedisLimiter) -> None:
    rate = Rate(1, 1)
    started = time.monotonic()
    assert (await redis_limiter.hit("k", rate)).allowed
    second = await redis_limiter.hit("k", rate)
    if time.monotonic() - started < 1:  # (a busy machine may have taken the whole window)
        assert not second.allowed
    deadline = time.monotonic() + 10
    while not (await redis_limiter.hit("k", rate)).allowed:  # allowed again once it resets
        assert time.monotonic() < deadline, "the window never reset"
        await asyncio.sleep(0.05)


async def test_two_limiters_share_the_count(namespace: str) -> None:
    one = RedisLimiter(connect_redis(REDIS_URL, 5), namespace=namespace)
    two = RedisLimiter(connect_redis(REDIS_URL, 5), namespace=namespace)
    try:
        rate = Rate(3, 60)
        allowed = [(await lim.hit("shared", rate)).allowed for lim in (one, two, one, two)]
        assert allowed == [True, True, True, False]
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_counter_that_lost_its_expiry_gets_one_again(
    redis_limiter: RedisLimiter, namespace: str
) -> None:
    client = redis_or_skip()
    client.set(namespace + "stuck", 100)  # no TTL: would block the key forever
    await redis_limiter.hit("stuck", Rate(1000, 60))  # counted here, then settled
    await redis_limiter.sync()
    assert 0 < client.pttl(namespace + "stuck") <= 60_000
    assert (await redis_limiter.hit("stuck", Rate(1000, 60))).remaining == 1000 - 102


async def test_dead_redis_costs_nothing_per_request_and_falls_back() -> None:
    clock = Clock()
    # Port 1: connection refused at once; the breaker then skips Redis entirely.
    limiter = RedisLimiter(
        connect_redis("redis://127.0.0.1:1/0", 0.05),
        breaker_cooldown=5,
        clock=clock,
        local_batch=0,
    )
    try:
        rate = Rate(100, 60)
        first = await limiter.hit("k", rate)
        assert first.remaining == 99  # counted locally
        assert limiter.breaker_open
        for _ in range(1000):
            await limiter.hit("k", rate)
        assert limiter.failures == 1  # Redis was tried once, then never again
        assert limiter.fallbacks == 1001
        assert not (await limiter.hit("k", rate)).allowed  # the local limit still applies
    finally:
        await limiter.aclose()


async def test_breaker_recovers_when_redis_comes_back(namespace: str) -> None:
    proxy = RedisProxy()
    await proxy.up()
    clock = Clock()
    limiter = RedisLimiter(
        connect_redis(proxy.url, 2),
        namespace=namespace,
        breaker_cooldown=5,
        clock=clock,
        local_batch=0,
    )
    rate = Rate(100, 60)
    try:
        assert (await limiter.hit("k", rate)).remaining == 99  # through Redis
        await proxy.down()
        assert (await limiter.hit("k", rate)).remaining == 99  # local count, fresh bucket
        assert limiter.breaker_open
        assert limiter.failures == 1
        await proxy.up()
        clock.now += 4
        await limiter.hit("k", rate)  # still inside the cooldown: not tried
        assert limiter.failures == 1
        assert redis_or_skip().get(namespace + "k") == b"1"
        clock.now += 2
        state = await limiter.hit("k", rate)  # the probe: Redis again
        assert state.remaining == 98
        assert not limiter.breaker_open
        assert redis_or_skip().get(namespace + "k") == b"2"
    finally:
        await limiter.aclose()
        await proxy.down()


async def test_failing_probe_reopens_the_breaker(namespace: str) -> None:
    proxy = RedisProxy()
    await proxy.up()
    clock = Clock()
    limiter = RedisLimiter(
        connect_redis(proxy.url, 0.2),
        namespace=namespace,
        breaker_cooldown=5,
        clock=clock,
        local_batch=0,
    )
    try:
        await proxy.down()
        await limiter.hit("k", Rate(10, 60))
        clock.now += 6
        await limiter.hit("k", Rate(10, 60))  # probe fails
        assert limiter.failures == 2
        assert limiter.breaker_open
        clock.now += 4
        await limiter.hit("k", Rate(10, 60))  # new cooldown: not tried
        assert limiter.failures == 2
    finally:
        await limiter.aclose()


# --- local plus global ---


def test_the_batch_is_a_hundredth_of_the_limit_up_to_the_setting() -> None:
    limiter = RedisLimiter(connect_redis(REDIS_URL, 0.5), local_batch=50)
    assert [limiter.batch(Rate(n, 60)) for n in (10, 99, 100, 600, 10**9)] == [0, 0, 1, 6, 50]


async def test_batched_hits_are_counted_here_and_settled_in_redis(namespace: str) -> None:
    limiter = RedisLimiter(
        connect_redis(REDIS_URL, 0.5), namespace=namespace, local_batch=50, sync_interval=30
    )
    try:
        rate = Rate(10_000, 60)
        states = [await limiter.hit("k", rate) for _ in range(10)]
        assert [s.remaining for s in states] == list(range(9_999, 9_989, -1))
        await limiter.sync()
        client = redis_or_skip()
        assert client.get(namespace + "k") == b"10"
        assert 59_000 < client.pttl(namespace + "k") <= 60_000
        client.incrby(namespace + "k", 5000)  # other processes' hits
        await limiter.hit("k", rate)
        await limiter.sync()
        assert (await limiter.hit("k", rate)).remaining == 10_000 - 5012
    finally:
        await limiter.aclose()


def _hammer(namespace: str, limit: int, hits: int, start: Any, out: Any) -> None:
    """One process (an API worker) hitting a shared key concurrently; puts how many passed."""

    async def main() -> int:
        limiter = RedisLimiter(connect_redis(REDIS_URL, 1.0), namespace=namespace)
        rate = Rate(limit, 60)

        async def one() -> bool:
            await asyncio.sleep(0)
            return (await limiter.hit("shared", rate)).allowed

        start.wait(30)
        allowed = sum(await asyncio.gather(*(one() for _ in range(hits))))
        await limiter.aclose()
        return allowed if limiter.fallbacks == 0 else -1

    out.put(asyncio.run(main()))


def test_two_processes_let_at_most_the_limit_plus_the_documented_slack_through(
    namespace: str,
) -> None:
    import multiprocessing

    limit, processes = 3_000, 2
    batch = RedisLimiter(connect_redis(REDIS_URL, 0.5)).batch(Rate(limit, 60))
    context = multiprocessing.get_context("fork")  # the test module need not be importable
    start, out = context.Event(), context.Queue()
    workers = [
        context.Process(target=_hammer, args=(namespace, limit, 2_500, start, out))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    start.set()
    allowed = [out.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(10)
    assert all(a > 0 for a in allowed), allowed  # both took part, Redis answered throughout
    assert limit <= sum(allowed) <= limit + (processes - 1) * batch, (allowed, batch)
    assert int(redis_or_skip().get(namespace + "shared") or 0) == sum(allowed)


async def test_a_black_holed_redis_never_holds_up_a_batched_request() -> None:
    from tests.serving.live import BlackHole

    hole = BlackHole()
    limiter = RedisLimiter(
        connect_redis(f"redis://127.0.0.1:{hole.port}/0", 0.2), local_batch=10, sync_interval=0.05
    )
    try:
        rate = Rate(10_000, 60)
        slowest = 0.0
        for _ in range(300):
            started = time.perf_counter()
            assert (await limiter.hit("k", rate)).allowed
            slowest = max(slowest, time.perf_counter() - started)
            await asyncio.sleep(0.002)
        # Only the first full batch may wait for the first (failing) settle.
        assert slowest < 0.3
        assert limiter.breaker_open
        assert limiter.fallbacks > 200
    finally:
        await limiter.aclose()
        hole.close()
