"""The TTL cache of the authentication hot path."""

from __future__ import annotations

import asyncio

import pytest

from serving.inference.ttlcache import TTLCache

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_values_and_misses_expire() -> None:
    clock = Clock()
    cache: TTLCache[str, int] = TTLCache(5, clock=clock)
    calls: list[str] = []

    async def load(key: str) -> int | None:
        calls.append(key)
        return None if key == "missing" else len(key)

    assert await cache.get("abc", load) == 3
    assert await cache.get("missing", load) is None
    assert await cache.get("abc", load) == 3
    assert await cache.get("missing", load) is None
    assert calls == ["abc", "missing"]
    clock.now = 5.0
    assert await cache.get("abc", load) == 3
    assert calls == ["abc", "missing", "abc"]


async def test_zero_ttl_caches_nothing() -> None:
    cache: TTLCache[str, int] = TTLCache(0)
    calls = 0

    async def load(key: str) -> int:
        nonlocal calls
        calls += 1
        return 1

    for _ in range(3):
        await cache.get("k", load)
    assert calls == 3
    assert len(cache) == 0


async def test_a_failed_load_reaches_every_waiter_and_is_not_cached() -> None:
    cache: TTLCache[str, int] = TTLCache(60)
    calls = 0

    async def load(key: str) -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise ConnectionError("database down")

    results = await asyncio.gather(
        *(cache.get("k", load) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, ConnectionError) for r in results)
    assert calls == 1
    with pytest.raises(ConnectionError):
        await cache.get("k", load)
    assert calls == 2


async def test_forget_during_a_load_keeps_the_stale_result_out() -> None:
    cache: TTLCache[str, str] = TTLCache(60)
    release = asyncio.Event()

    async def slow(key: str) -> str:
        await release.wait()
        return "before revocation"

    task = asyncio.create_task(cache.get("k", slow))
    await asyncio.sleep(0)
    cache.forget("k")
    release.set()
    assert await task == "before revocation"
    assert cache.peek("k") == (False, None)


def test_size_is_bounded() -> None:
    clock = Clock()
    cache: TTLCache[int, int] = TTLCache(60, max_entries=100, clock=clock)
    for i in range(1000):
        cache.put(i, i)
    assert len(cache) <= 100
    assert cache.peek(999) == (True, 999)
