"""API keys: generated at random, shown once, stored as a SHA-256 with a public prefix to find them.

A key reads ``cpk_<prefix>_<secret>``: ``prefix`` (10 hex characters) is stored in clear and
indexed, ``secret`` has 256 bits of entropy. The database keeps ``sha256(key)`` only.

Why SHA-256 and not bcrypt: bcrypt exists to slow down guessing *low-entropy* passwords. A
256-bit random secret cannot be guessed however fast the hash, and bcrypt would add ~250 ms to
every request that carries a key. A plain SHA-256 compared in constant time is the right tool
(as GitHub's and Stripe's tokens do).

``ApiKeyVerifier`` is the hot path: verified keys are cached in process for ``api_key_cache_ttl``
seconds (so a revocation is honoured within that delay by every worker, at once by the one that
revoked), and ``last_used_at`` is written in batches by a background flush, never per request.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from serving.access.principals import NotAuthenticated, Principal, Role
from serving.inference.ttlcache import TTLCache

log = logging.getLogger(__name__)

KEY_PREFIX = "cpk_"
"""Every key starts with this (makes leaked keys easy to spot by secret scanners)."""
PREFIX_HEX_CHARS = 10
MAX_KEY_LENGTH = 128
"""Longer ``X-API-Key`` values are refused before any parsing (ours are 58 characters)."""


_HEX = frozenset("0123456789abcdef")


class InvalidApiKey(NotAuthenticated):
    """The API key is malformed, unknown, revoked or wrong."""


@dataclass(frozen=True, slots=True)
class GeneratedKey:
    """A fresh key: the plaintext (shown once), its public prefix and the hash to store."""

    key: str
    prefix: str
    secret_hash: str


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What the verifier needs to know about a stored key (joined with its user)."""

    key_id: int
    prefix: str
    secret_hash: str
    revoked: bool
    user_id: int
    username: str
    role: Role


def hash_api_key(key: str) -> str:
    """The stored form of ``key``: hex SHA-256."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_api_key() -> GeneratedKey:
    """A new random key."""
    prefix = secrets.token_hex(PREFIX_HEX_CHARS // 2)
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    return GeneratedKey(key=key, prefix=prefix, secret_hash=hash_api_key(key))


def secret_matches(key: str, record: KeyRecord) -> bool:
    """Whether ``key`` is the key ``record`` was stored for (constant-time: timing reveals
    nothing about the secret)."""
    return hmac.compare_digest(hash_api_key(key), record.secret_hash)


def key_prefix(key: str) -> str | None:
    """The public prefix of a well-formed key, else ``None``."""
    if len(key) > MAX_KEY_LENGTH or not key.startswith(KEY_PREFIX) or not key.isascii():
        return None
    prefix, sep, secret = key[len(KEY_PREFIX) :].partition("_")
    if not sep or len(prefix) != PREFIX_HEX_CHARS or len(secret) < 32:
        return None
    return prefix if _HEX.issuperset(prefix) else None


class ApiKeyVerifier:
    """Turns an ``X-API-Key`` value into a principal, with a short cache and batched last-use."""

    def __init__(
        self,
        find: Callable[[str], Awaitable[KeyRecord | None]],
        *,
        cache_ttl: float = 5.0,
        max_entries: int = 10_000,
    ) -> None:
        self._find = find
        self.cache: TTLCache[str, KeyRecord] = TTLCache(cache_ttl, max_entries=max_entries)
        # key -> (trusted until, prefix, key id, principal): keys verified since their record
        # was loaded.
        self._verified: dict[str, tuple[float, str, int, Principal]] = {}
        self._used: dict[int, float] = {}

    async def verify(self, key: str) -> Principal:
        """The principal ``key`` belongs to; raises ``InvalidApiKey`` otherwise."""
        # A key verified while its record is still trusted needs no parsing or hashing again
        # (a third of the cost of a cached prediction); the entry dies with the record's.
        known = self._verified.get(key)
        if known is not None and known[0] > self.cache.now():
            self._used[known[2]] = time.time()
            return known[3]
        prefix = key_prefix(key)
        if prefix is None:
            raise InvalidApiKey("malformed API key")
        record = await self.cache.get(prefix, self._find)
        if record is None:
            raise InvalidApiKey(f"unknown API key prefix {prefix}")
        if not secret_matches(key, record):
            raise InvalidApiKey(f"wrong secret for API key {prefix}")
        if record.revoked:
            raise InvalidApiKey(f"revoked API key {prefix}")
        self._used[record.key_id] = time.time()
        principal = Principal(
            user_id=record.user_id,
            username=record.username,
            role=record.role,
            via="api_key",
            key_id=record.key_id,
        )
        expires = self.cache.expires_at(prefix)
        if expires is not None:
            if len(self._verified) >= self.cache.max_entries:
                self._verified.clear()
            self._verified[key] = (expires, prefix, record.key_id, principal)
        return principal

    def forget(self, prefix: str) -> None:
        """Drop a cached key (this process honours a revocation at once)."""
        self.cache.forget(prefix)
        for key in [k for k, known in self._verified.items() if known[1] == prefix]:
            del self._verified[key]

    def take_usage(self) -> dict[int, float]:
        """Key ids used since the last call, with the Unix time of their latest use."""
        used, self._used = self._used, {}
        return used

    def restore_usage(self, used: dict[int, float]) -> None:
        """Put back usage a failed flush could not write (the newest time wins)."""
        for key_id, t in used.items():
            self._used[key_id] = max(t, self._used.get(key_id, 0.0))
