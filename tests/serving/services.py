"""The real Redis and PostgreSQL of the tests, with nothing shared between test runs.

Several test runs may use the same servers at once (two checkouts, a benchmark, CI jobs), so a
run never touches what is not its own:

* Redis: one DB number for every run; each run's keys live under its own prefix
  (:data:`RUN_NAMESPACE`, ``carprice-test:<run id>:``), and each use below that under a fresh
  sub-prefix (:func:`namespace`). Nothing is flushed; the run's keys are deleted at its end.
* PostgreSQL: each use gets its own database, named after the run
  (``carprice_test_<run id>_<n>``), dropped after the use and, should a test have been killed
  half-way, at the end of the run (:func:`cleanup_run`).

The servers themselves are the project's (``make services``: 127.0.0.1:6379 and :5432, trust
auth); the tests open no fixed port of their own.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
from collections.abc import Iterator

import psycopg
import pytest
import redis

RUN_ID = f"{os.getpid()}{secrets.token_hex(3)}"
"""This test run (process id and a random part: unique among concurrent runs)."""

REDIS_URL = "redis://127.0.0.1:6379/3"
"""The tests' Redis DB (shared by runs: keys are always under :data:`RUN_NAMESPACE`)."""
RUN_NAMESPACE = f"carprice-test:{RUN_ID}:"
"""The prefix of every Redis key this run writes."""

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
_DATABASE_PREFIX = f"carprice_test_{RUN_ID}_"

_uses = itertools.count(1)


def namespace(what: str = "ns") -> str:
    """A Redis key prefix no other use (in this run or another) has, under :data:`RUN_NAMESPACE`."""
    return f"{RUN_NAMESPACE}{what}{next(_uses)}:"


def redis_or_skip(url: str = REDIS_URL) -> redis.Redis[bytes]:
    """A client of the tests' Redis DB (skips the test when no Redis runs here)."""
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:  # pragma: no cover - depends on the machine
        client.close()
        pytest.skip(f"Redis not reachable at {url}: {exc}")
    return client


def delete_namespace(client: redis.Redis[bytes], prefix: str) -> None:
    """Delete the keys under ``prefix`` (never a FLUSHDB: other runs share the DB)."""
    assert prefix.startswith(RUN_NAMESPACE), prefix  # only ever this run's keys
    batch: list[bytes] = []
    for key in client.scan_iter(match=_escaped(prefix) + "*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            client.delete(*batch)
            batch = []
    if batch:
        client.delete(*batch)


def _escaped(prefix: str) -> str:
    # SCAN MATCH is a glob: the prefix's own characters must match literally.
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in prefix)


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"PostgreSQL not reachable: {exc}")


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A database of this run's own (created, yielded as a SQLAlchemy URL, dropped)."""
    name = f"{_DATABASE_PREFIX}{next(_uses)}"
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield PG_URL.format(name=name)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def cleanup_run() -> None:
    """Delete what this run left in Redis and PostgreSQL (quietly: either may not be running)."""
    with contextlib.suppress(redis.RedisError):
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=5, socket_connect_timeout=2)
        with client:
            delete_namespace(client, RUN_NAMESPACE)
    with (
        contextlib.suppress(psycopg.Error),
        psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin,
    ):
        rows = admin.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
            (_DATABASE_PREFIX,),
        ).fetchall()
        for (name,) in rows:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
