"""A small in-process cache with a time-to-live and single-flight loading.

Used on the authentication hot path (API keys by prefix, users by id): a hit is a dict look-up;
a miss runs the loader once however many requests wait for the same key, so an expiring entry
under load costs one database query, not one per concurrent request. Misses (``None``) are
cached too, so random credentials cannot turn every request into a query.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """Values (``None``: "does not exist") trusted for ``ttl`` seconds; ``max_entries`` at most."""

    def __init__(
        self,
        ttl: float,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[K, tuple[float, V | None]] = {}
        self._loading: dict[K, asyncio.Future[V | None]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def peek(self, key: K) -> tuple[bool, V | None]:
        """``(True, value)`` for a fresh entry, ``(False, None)`` when absent or expired."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] > self._clock():
            return True, entry[1]
        return False, None

    def expires_at(self, key: K) -> float | None:
        """When the entry of ``key`` stops being trusted (on :meth:`now`'s clock), if any."""
        entry = self._entries.get(key)
        return entry[0] if entry is not None else None

    def now(self) -> float:
        """The cache's clock."""
        return self._clock()

    def put(self, key: K, value: V | None) -> None:
        """Remember ``value`` for ``key`` for ``ttl`` seconds."""
        if self.ttl <= 0:
            return
        if key not in self._entries and len(self._entries) >= self.max_entries:
            self._evict()
        self._entries[key] = (self._clock() + self.ttl, value)

    def forget(self, key: K) -> None:
        """Drop ``key`` (e.g. after revoking it here, so this process honours it at once)."""
        self._entries.pop(key, None)
        self._loading.pop(key, None)

    def clear(self) -> None:
        """Drop everything."""
        self._entries.clear()
        self._loading.clear()

    async def get(self, key: K, load: Callable[[K], Awaitable[V | None]]) -> V | None:
        """The cached value of ``key``, else ``await load(key)`` - once for all waiters."""
        fresh, value = self.peek(key)
        if fresh:
            return value
        task = self._loading.get(key)
        if task is None:
            # A task of its own: a waiter that gets cancelled (client gone) does not cancel
            # the load the other waiters share.
            task = asyncio.ensure_future(load(key))
            self._loading[key] = task
            task.add_done_callback(lambda t: self._loaded(key, t))
        return await asyncio.shield(task)

    def _loaded(self, key: K, task: asyncio.Future[V | None]) -> None:
        current = self._loading.get(key) is task
        if current:
            del self._loading[key]
        if task.cancelled():
            return
        # exception() also marks a failure as retrieved. A load that was forgotten meanwhile
        # (revoked here while it ran) may have read the old row: it is not cached.
        if task.exception() is None and current:
            self.put(key, task.result())

    def _evict(self) -> None:
        now = self._clock()
        for key in [k for k, (expires, _) in self._entries.items() if expires <= now]:
            del self._entries[key]
        # Still full of live entries (a flood of distinct keys): drop the oldest tenth.
        if len(self._entries) >= self.max_entries:
            for key in list(self._entries)[: max(1, self.max_entries // 10)]:
                del self._entries[key]
