"""Who is calling: a bearer token or API key in, a ``Principal`` (or ``NotAuthenticated``) out.

The hot paths do no database work per request:

* API key: the key's row (joined with its user) is cached by prefix for ``api_key_cache_ttl``
  seconds (``serving.access.apikeys``).
* Token: the signature and claims are checked in process (and a verified token is remembered
  for ``TOKEN_CACHE_SECONDS``, its expiry re-checked on each use); to honour "a deleted user's
  token stops working", the user is then looked up in a cache of users by id with the same TTL. A
  deleted user's tokens therefore fail within ``api_key_cache_ttl`` seconds (at once in the
  process that deleted them). The principal's role is the token's role, lowered to the user's
  current role if that was reduced since (a promotion needs a new login).

Database work (cache misses, login, batched last-used writes) runs in worker threads; bcrypt
runs in at most ``login_concurrency`` of them so a login flood cannot starve the thread pool.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import anyio
from sqlalchemy.exc import SQLAlchemyError

from serving.access.accounts import Accounts, UserInfo
from serving.access.apikeys import ApiKeyVerifier, KeyRecord
from serving.access.principals import AccessError, NotAuthenticated, Principal, Role
from serving.access.tokens import Claims, IssuedToken, TokensDisabled, TokenService
from serving.inference.ttlcache import TTLCache

T = TypeVar("T")

TOKEN_CACHE_SECONDS = 60.0
"""How long a verified token is remembered (it is re-checked for expiry on every use)."""


class AuthUnavailable(AccessError):  # noqa: N818 - named for what happened
    """The user database could not be reached, so credentials cannot be checked now."""


class Authenticator:
    """Verifies tokens, API keys and passwords against one ``Accounts`` store."""

    def __init__(
        self,
        accounts: Accounts,
        tokens: TokenService | TokensDisabled,
        *,
        cache_ttl: float = 5.0,
        login_concurrency: int = 4,
    ) -> None:
        self.accounts = accounts
        self._tokens = tokens
        self.users: TTLCache[int, UserInfo] = TTLCache(cache_ttl)
        self._tokens_seen: TTLCache[str, Claims] = TTLCache(TOKEN_CACHE_SECONDS)
        self.keys = ApiKeyVerifier(self._find_key, cache_ttl=cache_ttl)
        self._login_slots = anyio.CapacityLimiter(login_concurrency)

    @property
    def tokens_disabled(self) -> str | None:
        """Why tokens can be neither issued nor verified here (None: they can)."""
        return str(self._tokens) if isinstance(self._tokens, TokensDisabled) else None

    @property
    def tokens(self) -> TokenService:
        """The token service; ``TokensDisabled`` when there is no usable secret."""
        if isinstance(self._tokens, TokensDisabled):
            raise TokensDisabled(str(self._tokens))  # a new one: no traceback piles up
        return self._tokens

    async def _in_thread(
        self, fn: Callable[..., T], *args: object, limiter: anyio.CapacityLimiter | None = None
    ) -> T:
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)
        except SQLAlchemyError as exc:
            raise AuthUnavailable(f"user database unavailable: {type(exc).__name__}") from exc

    async def _find_key(self, prefix: str) -> KeyRecord | None:
        return await self._in_thread(self.accounts.find_key, prefix)

    async def _find_user(self, user_id: int) -> UserInfo | None:
        return await self._in_thread(self.accounts.get_user, user_id)

    async def by_api_key(self, key: str) -> Principal:
        """The principal owning ``key`` (raises ``NotAuthenticated``)."""
        return await self.keys.verify(key)

    def _verified(self, token: str) -> Claims:
        tokens = self.tokens
        # A token's signature and claims do not change: re-verifying one seen recently costs
        # ~150 us of python-jose for nothing. Expiry is still checked on every use.
        fresh, claims = self._tokens_seen.peek(token)
        if fresh and claims is not None and time.time() < claims.expires_at + tokens.leeway:
            return claims
        claims = tokens.decode(token)
        self._tokens_seen.put(token, claims)
        return claims

    async def by_token(self, token: str) -> Principal:
        """The principal ``token`` was issued to, if the user still exists."""
        claims = self._verified(token)
        user = await self.users.get(claims.user_id, self._find_user)
        if user is None:
            raise NotAuthenticated(f"token of deleted user {claims.user_id}")
        role = claims.role if user.role == Role.ADMIN else user.role
        return Principal(user_id=user.id, username=user.username, role=role, via="token")

    async def login(self, username: str, password: str) -> IssuedToken:
        """A token for ``username`` if ``password`` is right (raises ``NotAuthenticated``)."""
        tokens = self.tokens  # no password is checked for a token that cannot be issued
        user = await self._in_thread(
            self.accounts.check_password, username, password, limiter=self._login_slots
        )
        if user is None:
            raise NotAuthenticated("bad user name or password")
        return tokens.issue(user.id, user.role)

    async def flush_key_usage(self) -> None:
        """Write the last-use times collected since the previous flush (one statement)."""
        used = self.keys.take_usage()
        if not used:
            return
        try:
            await self._in_thread(self.accounts.record_key_use, used)
        except AuthUnavailable:
            self.keys.restore_usage(used)  # try again at the next flush
            raise

    def forget_user(self, user_id: int) -> None:
        """Drop a cached user (this process honours a deletion or role change at once)."""
        self.users.forget(user_id)
