"""Access control at the HTTP edge: lifespan helpers, the FastAPI dependencies, the error mapping.

Wiring:

* lifespan: ``await open_auth(app.state, settings)`` before ``yield``,
  ``await close_auth(app.state)`` after it.
* app factory: ``install(app, settings)`` adds CORS, the rate-limit headers and the error
  handler (``install(..., error_handler=False)`` if the app maps ``AccessError`` itself, with
  ``access_error_status``, ``access_error_message`` and ``access_error_headers``).
* routes: ``PredictPrincipal`` / ``AdminPrincipal`` parameters, or
  ``dependencies=[Depends(require_role(Role.PREDICT))]`` on a router.
* routers: ``serving.api.routers.auth.router`` (``POST /v1/auth/token``, ``GET /v1/auth/me``) and
  ``serving.api.routers.admin.router`` (``/v1/admin/...``).

Order of checks on a protected route: authenticate (401) -> rate limit per principal (429) ->
role (403) -> only then the body is read and parsed (:mod:`serving.api.bodies`). The fast lane
runs the same functions (:func:`admit`, :func:`check_role`) in the same order. Credentials:
``X-API-Key`` if present, else ``Authorization: Bearer <jwt>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from starlette.datastructures import MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.access.accounts import Accounts
from serving.access.apikeys import MAX_KEY_LENGTH, InvalidApiKey
from serving.access.authentication import Authenticator, AuthUnavailable
from serving.access.passwords import PasswordHasher
from serving.access.principals import AccessError, Forbidden, NotAuthenticated, Principal, Role
from serving.access.ratelimit import (
    Limiter,
    LocalLimiter,
    Rate,
    RateLimited,
    RateState,
    RedisLimiter,
    connect_redis,
)
from serving.access.tokens import IssuedToken, TokensDisabled, TokenService
from serving.api.errors import error_response
from serving.monitoring.metrics import RATE_LIMITED
from serving.settings import DEFAULT_JWT_SECRET, Settings
from serving.store.database import Database, open_database

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
TOKEN_URL = "/v1/auth/token"  # noqa: S105 - a path, not a secret
KEY_USAGE_FLUSH_SECONDS = 30.0
"""How often the batched ``last_used_at`` times of API keys are written."""

bearer_scheme = OAuth2PasswordBearer(
    tokenUrl=TOKEN_URL,
    scheme_name="OAuth2PasswordBearer",
    description="Log in with a user name and password; the token goes in `Authorization`.",
    auto_error=False,
)
api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER,
    scheme_name="APIKeyHeader",
    description="An API key from `carprice keys create`.",
    auto_error=False,
)


@dataclass
class AccessControl:
    """Everything access control needs at request time; one per app, on ``app.state.access``."""

    settings: Settings
    database: Database
    accounts: Accounts
    authenticator: Authenticator
    limiter: Limiter
    request_rate: Rate
    login_rate: Rate
    _flusher: asyncio.Task[None] | None = field(default=None, repr=False)

    async def login(self, username: str, password: str) -> IssuedToken:
        """A token for good credentials (raises ``NotAuthenticated``)."""
        return await self.authenticator.login(username, password)

    @property
    def unready_reason(self) -> str | None:
        """Why the server should take no traffic (a missing JWT secret), None when it may."""
        return self.authenticator.tokens_disabled


async def open_auth(state: Any, settings: Settings) -> AccessControl:
    """Connect the database (migrating it if configured) and Redis; keep it all on ``state``."""
    if settings.jwt_secret == DEFAULT_JWT_SECRET and settings.jwt_secret_problem is None:
        log.warning("using the default JWT secret: fine for a demo, never for a deployment")
    request_rate = Rate.parse(settings.rate_limit)  # a typo fails start-up, not the requests
    login_rate = Rate.parse(settings.login_rate_limit)
    database = await anyio.to_thread.run_sync(
        functools.partial(
            open_database, settings.database_url, migrate=settings.database_migrate_on_start
        )
    )
    hasher = PasswordHasher(settings.bcrypt_rounds)
    await anyio.to_thread.run_sync(hasher.prepare)
    accounts = Accounts(database, hasher)
    tokens: TokenService | TokensDisabled
    try:
        tokens = TokenService.from_settings(settings)
    except TokensDisabled as exc:
        # Started anyway (a crash loop helps nobody): live, not ready, API keys working.
        log.error("%s; until then logins and tokens get 503 and /v2/health/ready is 503", exc)
        tokens = exc
    authenticator = Authenticator(accounts, tokens, cache_ttl=settings.api_key_cache_ttl)
    redis_url = settings.ratelimit_url or settings.cache_url
    limiter: Limiter
    if redis_url:
        limiter = RedisLimiter(
            connect_redis(redis_url, settings.redis_timeout),
            namespace=settings.ratelimit_namespace,
            local_batch=settings.ratelimit_batch,
            sync_interval=settings.ratelimit_sync_interval,
        )
    else:
        log.info("no rate-limit Redis configured: limits are counted per process")
        limiter = LocalLimiter()
    access = AccessControl(
        settings=settings,
        database=database,
        accounts=accounts,
        authenticator=authenticator,
        limiter=limiter,
        request_rate=request_rate,
        login_rate=login_rate,
    )
    access._flusher = asyncio.create_task(_flush_key_usage_forever(authenticator))
    state.access = access
    return access


async def close_auth(state: Any) -> None:
    """Stop the background flush (writing what is pending), close Redis and the database."""
    access: AccessControl | None = getattr(state, "access", None)
    if access is None:
        return
    if access._flusher is not None:
        access._flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await access._flusher
    try:
        await access.authenticator.flush_key_usage()
    except AuthUnavailable as exc:
        log.warning("could not write API key last-use times at shutdown: %s", exc)
    await access.limiter.aclose()
    await anyio.to_thread.run_sync(access.database.close)
    del state.access


async def _flush_key_usage_forever(authenticator: Authenticator) -> None:
    while True:
        await asyncio.sleep(KEY_USAGE_FLUSH_SECONDS)
        try:
            await authenticator.flush_key_usage()
        except Exception as exc:  # keep flushing: one failed write must not stop the task
            log.warning("could not write API key last-use times: %s", exc)


# --- dependencies ---


def access_of(request: Request) -> AccessControl:
    """The access-control state ``open_auth`` put on ``app.state``."""
    access: AccessControl | None = getattr(request.app.state, "access", None)
    if access is None:
        raise RuntimeError("serving.api.security.open_auth() was not called in the lifespan")
    return access


async def get_access(request: Request) -> AccessControl:
    """Dependency form of ``access_of`` (async: a plain ``def`` would hop to a thread)."""
    return access_of(request)


AccessDep = Annotated[AccessControl, Depends(get_access)]


async def authenticate(
    access: AccessControl, token: str | None, api_key: str | None, *, presented: bool
) -> Principal:
    """The caller, from ``X-API-Key`` or a bearer token (raises ``NotAuthenticated``);
    ``presented``: whether either header was sent (an unusable one is still a 401)."""
    if api_key is None and not token:
        if presented:
            raise NotAuthenticated("unusable credentials header")
        raise NotAuthenticated("no credentials", presented=False)
    return await verify_credentials(access, token, api_key)


async def admit(
    access: AccessControl, token: str | None, api_key: str | None, *, presented: bool
) -> tuple[Principal, RateState]:
    """Authenticate, then count the request against the caller's rate limit: the first two
    checks of every protected request, before its body is read (the role comes next, with
    :func:`check_role`). Raises ``NotAuthenticated``; a spent limit is ``not state.allowed``."""
    principal = await authenticate(access, token, api_key, presented=presented)
    return principal, await access.limiter.hit(principal.limit_key, access.request_rate)


def check_role(principal: Principal, role: Role) -> None:
    """Raise ``Forbidden`` unless ``principal`` has ``role``."""
    if not principal.has(role):
        raise Forbidden(principal, role)


async def verify_credentials(
    access: AccessControl, token: str | None, api_key: str | None
) -> Principal:
    """The owner of ``api_key`` if given, else of ``token`` (raises ``NotAuthenticated``)."""
    if api_key is not None:
        if len(api_key) > MAX_KEY_LENGTH:
            raise InvalidApiKey("oversized API key")
        return await access.authenticator.by_api_key(api_key)
    if token:
        return await access.authenticator.by_token(token)
    raise NotAuthenticated("no credentials", presented=False)


def _count(request: Request, state: RateState, limit: str = "request") -> None:
    request.state.rate_limit = state  # RateLimitHeadersMiddleware puts it on the response
    if not state.allowed:
        request.state.rate_limited = limit  # the label of the 429 counted in the handler
        raise RateLimited(state)


async def _principal(request: Request, token: str | None, api_key: str | None) -> Principal:
    # Once per request, however many dependencies ask (a router-wide role check plus a route's
    # PrincipalDep must not count the request twice against the rate limit).
    known: Principal | None = getattr(request.state, "principal", None)
    if known is not None:
        return known
    presented = API_KEY_HEADER in request.headers or "authorization" in request.headers
    principal, state = await admit(access_of(request), token, api_key, presented=presented)
    _count(request, state)
    request.state.principal = principal
    return principal


# The hot path is one dependency (plus the two security schemes, which must be dependencies
# for OpenAPI and Swagger's Authorize button): every extra FastAPI dependency costs ~30-50 us.
TokenDep = Annotated[str | None, Security(bearer_scheme)]
ApiKeyDep = Annotated[str | None, Security(api_key_scheme)]


async def current_principal(request: Request, token: TokenDep, api_key: ApiKeyDep) -> Principal:
    """The authenticated caller, counted against their rate limit (401 / 429)."""
    return await _principal(request, token, api_key)


PrincipalDep = Annotated[Principal, Depends(current_principal)]
"""Any authenticated, rate-limited caller, whatever their role."""


@functools.cache
def require_role(role: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting principals whose role includes ``role`` (401 / 429 / 403).

    Cached, so every route asking for the same role shares one dependency (FastAPI then
    resolves it once per request even if a router and a route both ask).
    """

    async def dependency(request: Request, token: TokenDep, api_key: ApiKeyDep) -> Principal:
        principal = await _principal(request, token, api_key)
        check_role(principal, role)
        return principal

    dependency.__name__ = f"require_{role.value}_role"
    return dependency


PredictPrincipal = Annotated[Principal, Depends(require_role(Role.PREDICT))]
"""A caller allowed to predict and read ``/v1/models`` (``predict`` or ``admin``)."""
AdminPrincipal = Annotated[Principal, Depends(require_role(Role.ADMIN))]
"""A caller allowed to administer (``admin``)."""


def client_address(request: Request) -> str:
    """The client's IP (behind a proxy, run uvicorn with ``--proxy-headers``)."""
    return request.client.host if request.client is not None else "unknown"


async def limit_login(request: Request, access: AccessDep) -> None:
    """Count a login attempt against the client address's limit (raises ``RateLimited``)."""
    state = await access.limiter.hit(f"login:{client_address(request)}", access.login_rate)
    _count(request, state, "login")


# --- HTTP meaning of the access errors ---

_STATUS: dict[type[AccessError], int] = {
    NotAuthenticated: 401,
    Forbidden: 403,
    RateLimited: 429,
    AuthUnavailable: 503,
    TokensDisabled: 503,
}
_CODES = {
    401: ("not_authenticated", "Not authenticated"),
    403: ("forbidden", "Not allowed"),
    429: ("rate_limited", "Too many requests"),
    503: ("auth_unavailable", "Authentication is temporarily unavailable"),
}


def access_error_status(exc: AccessError) -> int:
    """401, 403, 429 or 503."""
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 401


def access_error_code(exc: AccessError) -> str:
    """The machine code of the error body (``not_authenticated``, ``forbidden``, ...)."""
    return _CODES[access_error_status(exc)][0]


def access_error_message(exc: AccessError) -> str:
    """The client-facing message: generic, never the internal reason."""
    if isinstance(exc, Forbidden):
        return f"this needs the {exc.required} role"
    if isinstance(exc, RateLimited):
        return f"rate limit of {exc.state.limit} exceeded; retry in {exc.state.retry_after} s"
    if isinstance(exc, TokensDisabled):
        return "logins and bearer tokens are not configured on this server; use an API key"
    return _CODES[access_error_status(exc)][1]


def access_error_headers(exc: AccessError) -> dict[str, str]:
    """``WWW-Authenticate`` on 401, ``Retry-After`` and the rate-limit headers on 429."""
    if isinstance(exc, NotAuthenticated):
        challenge = 'Bearer realm="carprice"'
        if exc.presented:
            challenge += ', error="invalid_token"'
        return {"WWW-Authenticate": challenge}
    if isinstance(exc, RateLimited):
        return exc.state.headers()
    if isinstance(exc, AuthUnavailable):
        return {"Retry-After": "5"}
    return {}


async def handle_access_error(request: Request, exc: Exception) -> JSONResponse:
    """Exception handler: status, headers, and the app's one error body shape."""
    assert isinstance(exc, AccessError)
    status = access_error_status(exc)
    if status == 401:
        log.info("authentication failed from %s: %s", client_address(request), exc)
    elif status == 503 and not isinstance(exc, TokensDisabled):  # that one is logged at start
        log.warning("authentication unavailable: %s", exc)
    elif status == 429:
        RATE_LIMITED.labels(getattr(request.state, "rate_limited", "request")).inc()
    return error_response(
        status,
        access_error_code(exc),
        access_error_message(exc),
        headers=access_error_headers(exc),
    )


class RateLimitHeadersMiddleware:
    """Adds ``X-RateLimit-Limit``/``-Remaining`` to responses of rate-limited requests.

    A pure ASGI middleware, so it works whatever the route returns (a model, or a ``Response``
    that FastAPI would not merge dependency headers into).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                state = scope.get("state", {}).get("rate_limit")
                if isinstance(state, RateState):
                    headers = MutableHeaders(scope=message)
                    for name, value in state.headers().items():
                        if name not in headers:
                            headers.append(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install(app: FastAPI, settings: Settings, *, error_handler: bool = True) -> None:
    """Add CORS (origins from settings; none by default), the rate-limit headers and,
    unless ``error_handler=False``, the handler turning ``AccessError`` into 401/403/429/503."""
    app.add_middleware(RateLimitHeadersMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", API_KEY_HEADER],
            expose_headers=["X-RateLimit-Limit", "X-RateLimit-Remaining", "Retry-After"],
        )
    if error_handler:
        app.add_exception_handler(AccessError, handle_access_error)
