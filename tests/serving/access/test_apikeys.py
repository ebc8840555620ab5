"""API keys: format, hashing; the verifier's cache, single-flight look-ups, usage batching."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.access.accounts import Accounts
from serving.access.apikeys import (
    KEY_PREFIX,
    MAX_KEY_LENGTH,
    ApiKeyVerifier,
    InvalidApiKey,
    KeyRecord,
    generate_api_key,
    hash_api_key,
    key_prefix,
)
from serving.access.passwords import PasswordHasher
from serving.access.principals import NotAuthenticated, Role
from serving.store.database import open_database

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def accounts(tmp_path: Path) -> Iterator[Accounts]:
    db = open_database(f"sqlite:///{tmp_path}/keys.db", migrate=True)
    accounts = Accounts(db, PasswordHasher(rounds=4))
    accounts.create_user("ann", "a fine password", Role.PREDICT)
    yield accounts
    db.close()


class CountingFinder:
    """The real database look-up, counted (and optionally slowed down)."""

    def __init__(self, accounts: Accounts, delay: float = 0.0) -> None:
        self.accounts = accounts
        self.delay = delay
        self.calls = 0

    async def __call__(self, prefix: str) -> KeyRecord | None:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return await asyncio.to_thread(self.accounts.find_key, prefix)


def test_generated_keys() -> None:
    keys = {generate_api_key().key for _ in range(100)}
    assert len(keys) == 100
    generated = generate_api_key()
    assert generated.key.startswith(KEY_PREFIX)
    assert len(generated.key) < MAX_KEY_LENGTH
    assert key_prefix(generated.key) == generated.prefix
    assert generated.secret_hash == hashlib.sha256(generated.key.encode()).hexdigest()
    assert generated.secret_hash == hash_api_key(generated.key)
    assert generated.key not in generated.secret_hash


@pytest.mark.parametrize(
    "key",
    [
        "",
        "cpk_",
        "cpk_0123456789",
        "cpk_0123456789_short",
        "cpk_ABCDEF0123_" + "a" * 43,  # prefix is lowercase hex
        "cpk_01234567_" + "a" * 43,  # prefix too short
        "xyz_0123456789_" + "a" * 43,
        "cpk_0123456789_" + "a" * MAX_KEY_LENGTH,
        "cpk_0123456789_" + "é" * 43,
    ],
)
def test_malformed_keys_have_no_prefix(key: str) -> None:
    assert key_prefix(key) is None


async def test_verify_a_stored_key(accounts: Accounts) -> None:
    created = accounts.create_key("ann", "ci")
    verifier = ApiKeyVerifier(CountingFinder(accounts))
    principal = await verifier.verify(created.key)
    assert (principal.username, principal.role, principal.via) == ("ann", Role.PREDICT, "api_key")
    assert principal.key_id == created.info.id


async def test_the_database_holds_only_the_hash(accounts: Accounts) -> None:
    created = accounts.create_key("ann")
    record = accounts.find_key(created.info.prefix)
    assert record is not None
    assert record.secret_hash == hash_api_key(created.key)
    with accounts.db.engine.connect() as connection:
        dump = "\n".join(connection.connection.iterdump())
    assert created.key not in dump
    assert created.key.rsplit("_", 1)[1] not in dump


async def test_wrong_secret_unknown_and_revoked_keys_are_refused(accounts: Accounts) -> None:
    created = accounts.create_key("ann")
    verifier = ApiKeyVerifier(CountingFinder(accounts), cache_ttl=0)
    wrong = created.key[:-1] + ("a" if created.key[-1] != "a" else "b")
    with pytest.raises(InvalidApiKey, match="wrong secret"):
        await verifier.verify(wrong)
    with pytest.raises(InvalidApiKey, match="unknown"):
        await verifier.verify(generate_api_key().key)
    with pytest.raises(InvalidApiKey, match="malformed"):
        await verifier.verify("garbage")
    accounts.revoke_key(created.info.id)
    with pytest.raises(InvalidApiKey, match="revoked"):
        await verifier.verify(created.key)
    assert issubclass(InvalidApiKey, NotAuthenticated)


async def test_verified_keys_are_cached_for_the_ttl(accounts: Accounts) -> None:
    created = accounts.create_key("ann")
    finder = CountingFinder(accounts)
    verifier = ApiKeyVerifier(finder, cache_ttl=0.2)
    for _ in range(50):
        await verifier.verify(created.key)
    assert finder.calls == 1
    accounts.revoke_key(created.info.id)
    await verifier.verify(created.key)  # within the TTL: the documented delay
    await asyncio.sleep(0.25)
    with pytest.raises(InvalidApiKey, match="revoked"):
        await verifier.verify(created.key)
    assert finder.calls == 2


async def test_a_remembered_key_still_refuses_a_wrong_secret_and_counts_its_uses(
    accounts: Accounts,
) -> None:
    created = accounts.create_key("ann")
    verifier = ApiKeyVerifier(CountingFinder(accounts), cache_ttl=60)
    await verifier.verify(created.key)
    verifier.take_usage()
    await verifier.verify(created.key)  # answered from the verified keys
    assert set(verifier.take_usage()) == {created.info.id}
    forged = created.key[:-4] + ("aaaa" if not created.key.endswith("aaaa") else "bbbb")
    with pytest.raises(InvalidApiKey, match="wrong secret"):
        await verifier.verify(forged)


async def test_forget_honours_a_revocation_at_once(accounts: Accounts) -> None:
    created = accounts.create_key("ann")
    verifier = ApiKeyVerifier(CountingFinder(accounts), cache_ttl=60)
    await verifier.verify(created.key)
    accounts.revoke_key(created.info.id)
    verifier.forget(created.info.prefix)
    with pytest.raises(InvalidApiKey):
        await verifier.verify(created.key)


async def test_unknown_prefixes_are_cached_too(accounts: Accounts) -> None:
    finder = CountingFinder(accounts)
    verifier = ApiKeyVerifier(finder, cache_ttl=60)
    stranger = generate_api_key().key
    for _ in range(10):
        with pytest.raises(InvalidApiKey):
            await verifier.verify(stranger)
    assert finder.calls == 1


async def test_concurrent_misses_share_one_lookup(accounts: Accounts) -> None:
    created = accounts.create_key("ann")
    finder = CountingFinder(accounts, delay=0.05)
    verifier = ApiKeyVerifier(finder, cache_ttl=60)
    principals = await asyncio.gather(*(verifier.verify(created.key) for _ in range(100)))
    assert {p.key_id for p in principals} == {created.info.id}
    assert finder.calls == 1


async def test_a_cancelled_waiter_does_not_cancel_the_shared_lookup(accounts: Accounts) -> None:
    created = accounts.create_key("ann")
    finder = CountingFinder(accounts, delay=0.05)
    verifier = ApiKeyVerifier(finder, cache_ttl=60)
    first = asyncio.create_task(verifier.verify(created.key))
    second = asyncio.create_task(verifier.verify(created.key))
    await asyncio.sleep(0.01)
    first.cancel()
    assert (await second).username == "ann"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert finder.calls == 1


async def test_usage_is_batched_and_written_once(accounts: Accounts) -> None:
    one, two = accounts.create_key("ann"), accounts.create_key("ann")
    verifier = ApiKeyVerifier(CountingFinder(accounts))
    for _ in range(20):
        await verifier.verify(one.key)
    await verifier.verify(two.key)
    used = verifier.take_usage()
    assert set(used) == {one.info.id, two.info.id}
    assert verifier.take_usage() == {}
    accounts.record_key_use(used)
    times = {k.id: k.last_used_at for k in accounts.list_keys()}
    assert times[one.info.id] is not None
    # An older time (a slower worker's flush) never moves last_used_at backwards.
    accounts.record_key_use({one.info.id: used[one.info.id] - 3600})
    assert {k.id: k.last_used_at for k in accounts.list_keys()}[one.info.id] == times[one.info.id]


async def test_failed_flush_keeps_the_usage_for_next_time(accounts: Accounts) -> None:
    created = accounts.create_key("ann")
    verifier = ApiKeyVerifier(CountingFinder(accounts))
    await verifier.verify(created.key)
    used = verifier.take_usage()
    await verifier.verify(created.key)
    verifier.restore_usage(used)
    assert verifier.take_usage()[created.info.id] >= used[created.info.id]
