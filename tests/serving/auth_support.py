"""Helpers for the access-control tests: real PostgreSQL databases, real Redis, a small app.

Imported explicitly by the ``test_auth_*``/... modules (no ``pytest_plugins``); the real
servers, kept apart per test run, are :mod:`tests.serving.services`.
The app built here is not the product's app: it is the smallest FastAPI app wired the way
``serving/main.py`` is meant to be (lifespan helpers, ``install``, the auth and admin routers)
plus dummy protected routes, so access control is tested on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse

from serving.access.principals import Role
from serving.api.bodies import JsonLimits
from serving.api.errors import install_error_handlers
from serving.api.routers import admin as admin_router
from serving.api.routers import auth as auth_router
from serving.api.security import (
    PredictPrincipal,
    PrincipalDep,
    close_auth,
    install,
    open_auth,
    require_role,
)
from serving.settings import Settings
from tests.serving.services import REDIS_URL, namespace

TEST_SECRET = "test-secret-" + "x" * 40


def make_settings(**overrides: Any) -> Settings:
    """Test settings: fast bcrypt, a real secret, no Redis unless given, this run's namespace."""
    values: dict[str, Any] = {
        "env": "test",
        "jwt_secret": TEST_SECRET,
        "bcrypt_rounds": 4,
        "database_url": "sqlite://",
        "rate_limit": "1000/minute",
        "login_rate_limit": "1000/minute",
        "ratelimit_namespace": namespace("rl"),
        "cache_namespace": namespace("cache"),
        "cache_url": None,
        "ratelimit_url": None,
        "refusal_delay": 0.0,  # refusals answered at once (test_hostile tests the tarpit)
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class _Loaded:
    version: str


class FakeModels:
    """Stands in for ``serving.inference.model_store.ModelStore`` (``/v1/admin/reload``)."""

    def __init__(self) -> None:
        self.refreshes = 0
        self.production: _Loaded | None = _Loaded("7")
        self.status = "serving car-price/7"

    async def refresh(self) -> bool:
        self.refreshes += 1
        return False


def build_app(settings: Settings) -> FastAPI:
    """A minimal app wired like the real one, with protected dummy routes."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await open_auth(app.state, settings)
        app.state.models = FakeModels()
        try:
            yield
        finally:
            await close_auth(app.state)

    app = FastAPI(lifespan=lifespan)
    app.state.json_limits = JsonLimits.from_settings(settings)
    install_error_handlers(app)
    install(app, settings)
    app.include_router(auth_router.router)
    app.include_router(admin_router.router)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/predict")
    async def predict(principal: PredictPrincipal) -> dict[str, Any]:
        return {"price": 12345.0, "user": principal.username}

    @app.get("/v1/raw")
    async def raw(principal: PredictPrincipal) -> JSONResponse:
        # A route returning a Response itself still gets the rate-limit headers.
        return JSONResponse({"raw": True})

    @app.get("/v1/models")
    async def models(principal: PredictPrincipal) -> dict[str, str]:
        return {"name": "car-price"}

    # /v2 the way a router-wide dependency protects it.
    v2 = APIRouter(prefix="/v2", dependencies=[Depends(require_role(Role.PREDICT))])

    @v2.post("/models/car-price/infer")
    async def infer() -> dict[str, Any]:
        return {"outputs": [{"name": "price", "data": [1.0]}]}

    @v2.get("/whoami")
    async def whoami(principal: PrincipalDep) -> dict[str, str]:
        # A router-wide role check and a route's PrincipalDep: one request, counted once.
        return {"username": principal.username}

    app.include_router(v2)
    return app


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the app, with the app's lifespan running.

    httpx's ASGI transport rather than Starlette's ``TestClient``: that one warns (an error
    here) unless ``httpx2`` is installed, and async tests can also drive a Redis outage.
    """
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def access_of(client: httpx.AsyncClient) -> Any:
    """The app's ``AccessControl`` (``app.state.access``)."""
    return client.app.state.access  # type: ignore[attr-defined]


async def create_user(client: httpx.AsyncClient, username: str, password: str, role: Role) -> int:
    """Create a user straight through the app's accounts store; its id."""
    accounts = access_of(client).accounts
    return int((await asyncio.to_thread(accounts.create_user, username, password, role)).id)


async def login(client: httpx.AsyncClient, username: str, password: str) -> str:
    """A bearer token for the user (asserts the login succeeds)."""
    response = await client.post(
        "/v1/auth/token", data={"username": username, "password": password}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


class RedisProxy:
    """A TCP proxy in front of the real Redis that a test can take down and bring back.

    Redis itself is shared by other tests, so an outage is made here rather than by stopping
    the server; the limiter still talks to a real Redis through real sockets.
    """

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 6379)) -> None:
        self.target = target
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/{REDIS_URL.rsplit('/', 1)[1]}"

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers.update({writer, up_writer})

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update({writer, up_writer})
