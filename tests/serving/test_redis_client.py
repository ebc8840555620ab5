"""The request path's Redis client: commands packed by hiredis, byte for byte what redis-py
sends, and the same refusals; a real round trip through it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from serving import redis_client
from tests.serving.services import REDIS_URL, delete_namespace, namespace, redis_or_skip

COMMANDS: list[tuple[Any, ...]] = [
    ("GET", "k"),
    ("SET", "k", 1.5, "EX", 600),
    ("SET", b"bytes", b"\x00\xff\r\n", "PX", 10**12),
    ("SET", "ünïcode", "é" * 100, "EX", 0),
    ("MGET", *(f"carprice:car-price:3:{i:064x}" for i in range(1000))),
    ("EVALSHA", "a" * 40, 2, "k1", "k2", 600, repr(0.1), repr(1e300), repr(-0.0)),
    ("SCRIPT LOAD", "return 1"),  # a subcommand in the name: sent as two arguments
    (b"CONFIG GET", b"maxmemory"),
    ("SET", "k", memoryview(b"view")),
    ("SET", "", ""),
]


def _packed(args: tuple[Any, ...]) -> bytes:
    client = redis_client.connect("redis://127.0.0.1:1/0", 0.1)
    connection = client.connection_pool.make_connection()
    return b"".join(bytes(chunk) for chunk in connection.pack_command(*args))


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: str(a[0])[:12])
def test_hiredis_packs_what_redis_py_packs(args: tuple[Any, ...]) -> None:
    expected = b"".join(bytes(chunk) for chunk in Connection().pack_command(*args))
    assert _packed(args) == expected


@pytest.mark.parametrize("bad", [None, True, object()])
def test_what_redis_py_refuses_is_refused_alike(bad: Any) -> None:
    with pytest.raises(DataError):
        Connection().pack_command("SET", "k", bad)
    with pytest.raises(DataError):
        _packed(("SET", "k", bad))


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("redis://127.0.0.1:6379/0", Connection),
        ("rediss://127.0.0.1:6379/0", SSLConnection),
        ("unix:///tmp/redis.sock", UnixDomainSocketConnection),
    ],
)
def test_the_urls_connection_kind_is_kept(url: str, base: type) -> None:
    kind = redis_client.connect(url, 0.1).connection_pool.connection_class
    assert issubclass(kind, base)
    assert kind is not base
    assert redis_client.connect(url, 0.1).connection_pool.connection_class is kind


def test_round_trip_through_real_redis() -> None:
    sync = redis_or_skip()
    prefix = namespace("client")
    keys = [f"{prefix}:{i}" for i in range(1000)]

    async def go() -> tuple[list[Any], Any, Any]:
        client = redis_client.connect(REDIS_URL, 5)
        try:
            script = client.register_script(
                "for i, k in ipairs(KEYS) do redis.call('SET', k, ARGV[i + 1], 'EX', ARGV[1]) end"
                " return #KEYS"
            )
            count = await script(keys=keys, args=[60, *(repr(i + 0.5) for i in range(1000))])
            values = await client.mget(keys)
            ttl = await client.ttl(keys[0])
            return values, count, ttl
        finally:
            await client.aclose()

    try:
        values, count, ttl = asyncio.run(go())
        assert count == 1000
        assert [float(v) for v in values] == [i + 0.5 for i in range(1000)]
        assert 0 < ttl <= 60
    finally:
        delete_namespace(sync, prefix)


def test_timeouts_are_the_callers() -> None:
    kwargs = redis_client.connect(REDIS_URL, 0.25).connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 0.25
    assert kwargs["socket_connect_timeout"] == 0.25
    assert kwargs["health_check_interval"] == 0
    assert kwargs["retry"].get_retries() == 0
