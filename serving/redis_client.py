"""The one way the API opens Redis (the cache and the rate limits): short timeouts, no retries,
no health pings, and commands packed in C.

redis-py's asyncio connection packs every command in Python, one argument at a time into a
growing buffer: 1.2 ms for the 2,000 arguments of a 1,000-car batch's cache write, the same
again for its ``MGET``. Its synchronous connection uses hiredis for that, the asyncio one does
not; :class:`_HiredisPacking` makes it (``hiredis.pack_command``: 0.16 ms for those 2,000).
Replies are parsed by hiredis already.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


class _HiredisPacking:
    """Mixed into the pool's connection class: ``pack_command`` by hiredis, in one buffer."""

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        # As redis-py does: a command name holding its subcommand ('SCRIPT LOAD') is split.
        if isinstance(first, str) and " " in first:
            args = (*first.encode().split(), *args[1:])
        elif isinstance(first, bytes) and b" " in first:
            args = (*first.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # what redis-py refuses too (None, bool): its own error
            return super().pack_command(*args)  # type: ignore[misc, no-any-return]


_PACKED: dict[type, type] = {}


def connect(url: str, timeout: float) -> Redis[bytes]:
    """A client for the request path: every command waits at most ``timeout`` seconds on a
    connection (and as long to connect), fails at once instead of retrying, and skips the
    ``PING`` before reuse (a broken connection fails its command, which the caller handles)."""
    client = Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )
    pool = client.connection_pool
    base = pool.connection_class  # by the URL's scheme: TCP, TLS or a Unix socket
    packed = _PACKED.get(base)
    if packed is None:
        packed = _PACKED[base] = type(f"Hiredis{base.__name__}", (_HiredisPacking, base), {})
    pool.connection_class = packed
    return client
