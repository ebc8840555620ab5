"""Access control over HTTP: login, tokens, API keys, roles, and every attack answered 401/403.

A small app wired like the real one (``auth_support.build_app``) on a real database (SQLite
file, PostgreSQL where marked) with the rate limits in the real Redis.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwt

from serving.access.principals import Role
from tests.serving.auth_support import (
    TEST_SECRET,
    access_of,
    create_user,
    login,
    make_settings,
    running,
)
from tests.serving.services import REDIS_URL, delete_namespace, postgres_database, redis_or_skip

pytestmark = pytest.mark.anyio

PASSWORD = "a fine password"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/auth.db"
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/auth.db"


@pytest.fixture
def namespace() -> Iterator[str]:
    """A fresh Redis key prefix for this test's rate-limit counters (deleted afterwards)."""
    client = redis_or_skip()
    settings = make_settings()
    yield settings.ratelimit_namespace
    delete_namespace(client, settings.ratelimit_namespace)
    client.close()


@pytest.fixture
def settings_for(namespace: str) -> Callable[..., Any]:
    def build(database_url: str, **overrides: Any) -> Any:
        values = {"ratelimit_url": REDIS_URL, "ratelimit_namespace": namespace, **overrides}
        return make_settings(database_url=database_url, **values)

    return build


@pytest.fixture
async def client(
    sqlite_url: str, settings_for: Callable[..., Any]
) -> AsyncIterator[httpx.AsyncClient]:
    """The app on SQLite with Redis rate limits; users ``ann`` (predict) and ``root`` (admin)."""
    async with running(settings_for(sqlite_url)) as c:
        await create_user(c, "ann", PASSWORD, Role.PREDICT)
        await create_user(c, "root", PASSWORD, Role.ADMIN)
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def key_header(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


async def new_key(client: httpx.AsyncClient, username: str) -> tuple[int, str]:
    created = await asyncio.to_thread(access_of(client).accounts.create_key, username)
    return created.info.id, created.key


def assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="carprice"')
    assert response.json()["code"] == "not_authenticated"
    assert response.json()["error"] == "Not authenticated"


# --- the happy paths ---


async def test_login_returns_an_oauth2_token(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/auth/token", data={"username": "ann", "password": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-RateLimit-Limit"] == "1000"
    assert response.headers["X-RateLimit-Remaining"] == "999"


async def test_token_and_api_key_work_on_v1_and_v2(client: httpx.AsyncClient) -> None:
    token = await login(client, "ann", PASSWORD)
    _, key = await new_key(client, "ann")
    for headers in (bearer(token), key_header(key)):
        response = await client.post("/v1/predict", headers=headers, json={})
        assert response.status_code == 200, response.text
        assert response.json()["user"] == "ann"
        assert int(response.headers["X-RateLimit-Remaining"]) < 1000
        assert (await client.get("/v1/models", headers=headers)).status_code == 200
        v2 = await client.post("/v2/models/car-price/infer", headers=headers, json={})
        assert v2.status_code == 200
        assert "X-RateLimit-Limit" in v2.headers
    me = await client.get("/v1/auth/me", headers=key_header(key))
    assert me.json() == {"username": "ann", "role": "predict", "via": "api_key"}
    me = await client.get("/v1/auth/me", headers=bearer(token))
    assert me.json() == {"username": "ann", "role": "predict", "via": "token"}


async def test_routes_returning_a_response_get_the_rate_limit_headers(
    client: httpx.AsyncClient,
) -> None:
    _, key = await new_key(client, "ann")
    response = await client.get("/v1/raw", headers=key_header(key))
    assert response.status_code == 200
    assert response.headers["X-RateLimit-Limit"] == "1000"
    assert response.headers["X-RateLimit-Remaining"] == "999"


async def test_open_endpoints_stay_open(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).status_code == 200
    assert (await client.get("/docs")).status_code == 200
    schema = (await client.get("/openapi.json")).json()
    schemes = schema["components"]["securitySchemes"]
    # What Swagger UI's Authorize button offers: the password flow and the key header.
    assert schemes["OAuth2PasswordBearer"]["flows"]["password"]["tokenUrl"] == "/v1/auth/token"
    assert schemes["APIKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "An API key from `carprice keys create`.",
    }
    security = schema["paths"]["/v1/predict"]["post"]["security"]
    assert {"OAuth2PasswordBearer": []} in security
    assert {"APIKeyHeader": []} in security


async def test_admin_can_reload_and_predict(client: httpx.AsyncClient) -> None:
    token = await login(client, "root", PASSWORD)
    response = await client.post("/v1/admin/reload", headers=bearer(token))
    assert response.status_code == 200
    assert response.json() == {
        "changed": False,
        "model_version": "7",
        "status": "serving car-price/7",
    }
    assert client.app.state.models.refreshes == 1  # type: ignore[attr-defined]
    assert (await client.post("/v1/predict", headers=bearer(token), json={})).status_code == 200


# --- authentication failures: 401 with a challenge and a generic message ---


async def test_no_credentials(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/predict", json={})
    assert_401(response)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="carprice"'
    assert "X-RateLimit-Limit" not in response.headers


async def test_wrong_password_and_unknown_user_are_indistinguishable(
    client: httpx.AsyncClient,
) -> None:
    wrong = await client.post("/v1/auth/token", data={"username": "ann", "password": "nope" * 3})
    unknown = await client.post("/v1/auth/token", data={"username": "nobody", "password": "x" * 9})
    huge = await client.post("/v1/auth/token", data={"username": "u" * 5000, "password": "x"})
    for response in (wrong, unknown, huge):
        assert_401(response)
    assert wrong.json() == unknown.json() == huge.json()


def _b64(data: Any) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(user_id: int, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "role": "admin",
        "iat": now,
        "exp": now + 300,
        "iss": "carprice",
        "aud": "carprice-api",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not ...}


def _rsa() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def _hmac_token(secret: str, claims: dict[str, Any], alg: str = "HS256") -> str:
    signing_input = f"{_b64({'alg': alg, 'typ': 'JWT'})}.{_b64(claims)}"
    mac = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def _forged(kind: str, uid: int) -> str:
    now = int(time.time())
    good = _claims(uid)
    if kind == "alg none":
        return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(good)}."
    if kind == "tampered payload":
        header, _, signature = jwt.encode(_claims(uid, role="predict"), TEST_SECRET).split(".")
        return f"{header}.{_b64(good)}.{signature}"
    if kind == "another key":
        return str(jwt.encode(good, "x" * 48))
    if kind == "HS512 instead of HS256":
        return str(jwt.encode(good, TEST_SECRET, algorithm="HS512"))
    if kind == "RS256":
        return str(jwt.encode(good, _rsa()[0], algorithm="RS256"))
    if kind == "HS256 keyed with an RSA public key":
        return _hmac_token(_rsa()[1], good)
    if kind == "RS256 header on an HS256 signature":
        return _hmac_token(TEST_SECRET, good, alg="RS256")
    table: dict[str, dict[str, Any]] = {
        "expired": {"exp": now - 60, "iat": now - 400},
        "not yet valid": {"nbf": now + 300},
        "issued in the future": {"iat": now + 300, "exp": now + 600},
        "missing exp": {"exp": ...},
        "missing iat": {"iat": ...},
        "missing aud": {"aud": ...},
        "wrong aud": {"aud": "another-api"},
        "missing iss": {"iss": ...},
        "wrong iss": {"iss": "someone"},
        "missing sub": {"sub": ...},
        "unknown user": {"sub": "999999"},
        "exp is an object": {"exp": {"$gt": 0}},
        "exp is null": {"exp": None},
    }
    return str(jwt.encode(_claims(uid, **table[kind]), TEST_SECRET))


FORGERIES = [
    "alg none",
    "tampered payload",
    "another key",
    "HS512 instead of HS256",
    "RS256",
    "HS256 keyed with an RSA public key",
    "RS256 header on an HS256 signature",
    "expired",
    "not yet valid",
    "issued in the future",
    "missing exp",
    "missing iat",
    "missing aud",
    "wrong aud",
    "missing iss",
    "wrong iss",
    "missing sub",
    "unknown user",
    "exp is an object",
    "exp is null",
]


@pytest.mark.parametrize("kind", FORGERIES)
async def test_bad_tokens_get_401(client: httpx.AsyncClient, kind: str) -> None:
    admin_id = next(u.id for u in access_of(client).accounts.list_users() if u.username == "root")
    token = _forged(kind, admin_id)
    for path in ("/v1/predict", "/v1/admin/reload"):
        response = await client.post(path, headers=bearer(token), json={})
        assert_401(response)
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


GARBAGE_HEADERS: list[dict[str, Any]] = [
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer "},
    {"Authorization": "Basic YW5uOmEgZmluZSBwYXNzd29yZA=="},
    {"Authorization": "Token abc"},
    {"Authorization": "Bearer not.a.jwt"},
    {"Authorization": "Bearer a.b"},
    {"Authorization": "Bearer " + "A" * 100_000},
    {"Authorization": "Bearer " + ("eyJ" + "A" * 40 + ".") * 3},
    {"Authorization": b"Bearer \xff\xfe\x00"},
    {"X-API-Key": ""},
    {"X-API-Key": "cpk_"},
    {"X-API-Key": "cpk_zzzzzzzzzz_" + "a" * 43},
    {"X-API-Key": "cpk_0123456789_" + "a" * 43},
    {"X-API-Key": "k" * 100_000},
    {"X-API-Key": b"cpk_\xff\xfe"},
]


@pytest.mark.parametrize("headers", GARBAGE_HEADERS, ids=range(len(GARBAGE_HEADERS)))
async def test_garbage_credentials_get_401(
    client: httpx.AsyncClient, headers: dict[str, Any]
) -> None:
    assert_401(await client.post("/v1/predict", headers=headers, json={}))


async def test_a_key_with_a_known_prefix_and_a_wrong_secret(client: httpx.AsyncClient) -> None:
    _, key = await new_key(client, "ann")
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert_401(await client.post("/v1/predict", headers=key_header(forged), json={}))
    assert (await client.post("/v1/predict", headers=key_header(key), json={})).status_code == 200


# --- revocation and deletion ---


async def test_revoked_key_is_refused_at_once_in_the_revoking_process(
    client: httpx.AsyncClient,
) -> None:
    key_id, key = await new_key(client, "ann")
    admin = bearer(await login(client, "root", PASSWORD))
    assert (await client.post("/v1/predict", headers=key_header(key), json={})).status_code == 200
    revoked = await client.delete(f"/v1/admin/keys/{key_id}", headers=admin)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert_401(await client.post("/v1/predict", headers=key_header(key), json={}))


async def test_revocation_elsewhere_is_honoured_within_the_cache_ttl(
    database_url: str, settings_for: Callable[..., Any]
) -> None:
    """Another worker (or the CLI) revokes a key: this one notices within the cache TTL."""
    async with running(settings_for(database_url, api_key_cache_ttl=0.3)) as client:
        await create_user(client, "ann", PASSWORD, Role.PREDICT)
        key_id, key = await new_key(client, "ann")
        assert (await client.post("/v1/predict", headers=key_header(key))).status_code == 200
        await asyncio.to_thread(access_of(client).accounts.revoke_key, key_id)
        # Still cached (the documented delay) ...
        assert (await client.post("/v1/predict", headers=key_header(key))).status_code == 200
        await asyncio.sleep(0.35)
        # ... and refused once the cache entry is older than the TTL.
        assert_401(await client.post("/v1/predict", headers=key_header(key)))


async def test_a_deleted_users_token_and_keys_stop_working(
    database_url: str, settings_for: Callable[..., Any]
) -> None:
    async with running(settings_for(database_url, api_key_cache_ttl=0.3)) as client:
        await create_user(client, "ann", PASSWORD, Role.PREDICT)
        token = await login(client, "ann", PASSWORD)
        _, key = await new_key(client, "ann")
        for headers in (bearer(token), key_header(key)):
            assert (await client.post("/v1/predict", headers=headers)).status_code == 200
        await asyncio.to_thread(access_of(client).accounts.delete_user, "ann")
        await asyncio.sleep(0.35)
        for headers in (bearer(token), key_header(key)):
            assert_401(await client.post("/v1/predict", headers=headers))
        # A new user of the same name is someone else: the old token stays dead.
        await create_user(client, "ann", PASSWORD, Role.PREDICT)
        assert_401(await client.post("/v1/predict", headers=bearer(token)))


async def test_deleting_through_the_admin_api_is_immediate(client: httpx.AsyncClient) -> None:
    token = await login(client, "ann", PASSWORD)
    assert (await client.post("/v1/predict", headers=bearer(token))).status_code == 200
    admin = bearer(await login(client, "root", PASSWORD))
    assert (await client.delete("/v1/admin/users/ann", headers=admin)).status_code == 204
    assert_401(await client.post("/v1/predict", headers=bearer(token)))


async def test_a_demoted_admins_token_loses_the_admin_role(
    sqlite_url: str, settings_for: Callable[..., Any]
) -> None:
    async with running(settings_for(sqlite_url, api_key_cache_ttl=0.2)) as client:
        await create_user(client, "boss", PASSWORD, Role.ADMIN)
        token = await login(client, "boss", PASSWORD)
        assert (await client.post("/v1/admin/reload", headers=bearer(token))).status_code == 200
        await asyncio.to_thread(access_of(client).accounts.set_role, "boss", Role.PREDICT)
        await asyncio.sleep(0.25)
        assert (await client.post("/v1/admin/reload", headers=bearer(token))).status_code == 403
        assert (await client.post("/v1/predict", headers=bearer(token))).status_code == 200


# --- roles ---


async def test_predict_principal_on_admin_endpoints_gets_403(client: httpx.AsyncClient) -> None:
    token = await login(client, "ann", PASSWORD)
    _, key = await new_key(client, "ann")
    calls = [
        ("POST", "/v1/admin/reload"),
        ("GET", "/v1/admin/users"),
        ("POST", "/v1/admin/users"),
        ("DELETE", "/v1/admin/users/root"),
        ("GET", "/v1/admin/keys"),
        ("POST", "/v1/admin/keys"),
        ("DELETE", "/v1/admin/keys/1"),
    ]
    for headers in (bearer(token), key_header(key)):
        for method, path in calls:
            response = await client.request(method, path, headers=headers)
            assert response.status_code == 403, (method, path, response.text)
            assert response.json()["code"] == "forbidden"
            assert "WWW-Authenticate" not in response.headers
            assert "X-RateLimit-Remaining" in response.headers  # counted, then refused
    assert client.app.state.models.refreshes == 0  # type: ignore[attr-defined]


# --- rate limits ---


async def test_login_brute_force_hits_the_limit(
    sqlite_url: str, settings_for: Callable[..., Any]
) -> None:
    async with running(settings_for(sqlite_url, login_rate_limit="3/minute")) as client:
        await create_user(client, "ann", PASSWORD, Role.PREDICT)
        for attempt in range(3):
            response = await client.post(
                "/v1/auth/token", data={"username": "ann", "password": f"guess-{attempt}"}
            )
            assert response.status_code == 401
            assert response.headers["X-RateLimit-Remaining"] == str(2 - attempt)
        # Over the limit even the right password is refused until the window ends.
        response = await client.post(
            "/v1/auth/token", data={"username": "ann", "password": PASSWORD}
        )
        assert response.status_code == 429
        assert response.json()["code"] == "rate_limited"
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        assert response.headers["X-RateLimit-Limit"] == "3"
        assert response.headers["X-RateLimit-Remaining"] == "0"


async def test_the_login_limit_comes_before_the_form_is_read(
    sqlite_url: str, settings_for: Callable[..., Any]
) -> None:
    # A form that cannot be parsed is a 400 while attempts remain, and a 429 once they are
    # spent: it was never read. (Read as a form parameter, FastAPI parsed it first: a 400.)
    broken = {"Content-Type": "multipart/form-data; boundary=x"}
    garbage = b"--x\r\nContent-Disposition: form-data\r\n\r\nno name, no end"
    async with running(settings_for(sqlite_url, login_rate_limit="2/minute")) as client:
        first = await client.post("/v1/auth/token", content=garbage, headers=broken)
        assert first.status_code == 400, first.text
        assert first.json()["code"] == "bad_request"
        wrong = await client.post("/v1/auth/token", data={"username": "ann", "password": "bad"})
        assert wrong.status_code == 401
        spent = await client.post("/v1/auth/token", content=garbage, headers=broken)
        assert spent.status_code == 429, spent.text
        assert spent.json()["code"] == "rate_limited"


async def test_a_login_form_missing_a_field_is_a_422_naming_it(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/auth/token", data={"username": "ann"})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_request"
    assert "password" in response.text
    schema = (await client.get("/openapi.json")).json()["paths"]["/v1/auth/token"]["post"]
    form = schema["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    assert {"username", "password"} <= set(form["required"])


async def test_a_login_form_past_its_field_count_is_a_422_naming_the_limit(
    client: httpx.AsyncClient,
) -> None:
    fields = {"username": "ann", "password": PASSWORD} | {f"x{i}": "1" for i in range(5)}
    response = await client.post("/v1/auth/token", data=fields)  # 7 fields: one too many
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "limit_exceeded"
    assert "more than 6 fields" in response.json()["error"]
    repeated = await client.post(
        "/v1/auth/token",
        content=b"&".join([b"username=ann"] * 1000),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (repeated.status_code, repeated.json()["code"]) == (422, "limit_exceeded"), repeated


async def test_per_principal_limit_is_shared_by_a_users_tokens_and_keys(
    sqlite_url: str, settings_for: Callable[..., Any]
) -> None:
    async with running(settings_for(sqlite_url, rate_limit="4/minute")) as client:
        await create_user(client, "ann", PASSWORD, Role.PREDICT)
        await create_user(client, "bob", PASSWORD, Role.PREDICT)
        token = await login(client, "ann", PASSWORD)
        _, key = await new_key(client, "ann")
        remaining = []
        for headers in (bearer(token), key_header(key), bearer(token), key_header(key)):
            response = await client.post("/v1/predict", headers=headers)
            assert response.status_code == 200
            remaining.append(response.headers["X-RateLimit-Remaining"])
        assert remaining == ["3", "2", "1", "0"]
        limited = await client.post("/v1/predict", headers=key_header(key))
        assert limited.status_code == 429
        assert int(limited.headers["Retry-After"]) >= 1
        assert limited.headers["X-RateLimit-Remaining"] == "0"
        # Someone else is not affected.
        other = bearer(await login(client, "bob", PASSWORD))
        assert (await client.post("/v1/predict", headers=other)).status_code == 200


async def test_a_request_is_counted_once_however_many_dependencies_ask(
    sqlite_url: str, settings_for: Callable[..., Any]
) -> None:
    async with running(settings_for(sqlite_url, rate_limit="5/minute")) as client:
        await create_user(client, "ann", PASSWORD, Role.PREDICT)
        _, key = await new_key(client, "ann")
        remaining = [
            (await client.get("/v2/whoami", headers=key_header(key))).headers[
                "X-RateLimit-Remaining"
            ]
            for _ in range(3)
        ]
        assert remaining == ["4", "3", "2"]


async def test_two_workers_share_the_limit_through_redis(
    sqlite_url: str, settings_for: Callable[..., Any]
) -> None:
    settings = settings_for(sqlite_url, rate_limit="4/minute")
    async with running(settings) as one, running(settings) as two:
        await create_user(one, "ann", PASSWORD, Role.PREDICT)
        _, key = await new_key(one, "ann")
        statuses = [
            (await worker.post("/v1/predict", headers=key_header(key))).status_code
            for worker in (one, two, one, two, one)
        ]
        assert statuses == [200, 200, 200, 200, 429]


async def test_without_redis_limits_are_counted_per_process(sqlite_url: str) -> None:
    settings = make_settings(database_url=sqlite_url, login_rate_limit="2/minute")
    async with running(settings) as client:
        for _ in range(2):
            response = await client.post("/v1/auth/token", data={"username": "x", "password": "y"})
            assert response.status_code == 401
        assert (
            await client.post("/v1/auth/token", data={"username": "x", "password": "y"})
        ).status_code == 429


async def test_redis_down_predictions_fall_back_and_login_stays_limited(
    sqlite_url: str, namespace: str
) -> None:
    # Nothing listens on port 1: every Redis call fails at once.
    settings = make_settings(
        database_url=sqlite_url,
        ratelimit_url="redis://127.0.0.1:1/0",
        rate_limit="1000/minute",
        login_rate_limit="3/minute",
    )
    async with running(settings) as client:
        await create_user(client, "ann", PASSWORD, Role.PREDICT)
        _, key = await new_key(client, "ann")
        for _ in range(20):
            response = await client.post("/v1/predict", headers=key_header(key))
            assert response.status_code == 200
            assert response.headers["X-RateLimit-Limit"] == "1000"
        limiter = access_of(client).limiter
        assert limiter.breaker_open
        assert limiter.fallbacks >= 20
        assert limiter.failures == 1  # the breaker stopped further attempts
        statuses = [
            (
                await client.post("/v1/auth/token", data={"username": "ann", "password": "bad"})
            ).status_code
            for _ in range(4)
        ]
        assert statuses == [401, 401, 401, 429]


# --- administration ---


async def test_admin_manages_users_and_keys(client: httpx.AsyncClient) -> None:
    admin = bearer(await login(client, "root", PASSWORD))
    created = await client.post(
        "/v1/admin/users",
        headers=admin,
        json={"username": "carl", "password": PASSWORD, "role": "predict"},
    )
    assert created.status_code == 201
    assert created.json()["role"] == "predict"
    assert "password" not in created.text
    duplicate = await client.post(
        "/v1/admin/users", headers=admin, json={"username": "carl", "password": PASSWORD}
    )
    assert duplicate.status_code == 409
    weak = await client.post(
        "/v1/admin/users", headers=admin, json={"username": "dora", "password": "short"}
    )
    assert weak.status_code == 422
    names = [u["username"] for u in (await client.get("/v1/admin/users", headers=admin)).json()]
    assert names == ["ann", "carl", "root"]

    key = await client.post("/v1/admin/keys", headers=admin, json={"username": "carl"})
    assert key.status_code == 201
    plaintext = key.json()["key"]
    assert (await client.get("/v1/auth/me", headers=key_header(plaintext))).json()[
        "username"
    ] == "carl"
    listed = (await client.get("/v1/admin/keys?username=carl", headers=admin)).json()
    assert [k["prefix"] for k in listed] == [key.json()["prefix"]]
    assert plaintext not in json.dumps(listed)
    assert (
        await client.post("/v1/admin/keys", headers=admin, json={"username": "nobody"})
    ).status_code == 404
    assert (await client.delete("/v1/admin/keys/99999", headers=admin)).status_code == 404
    assert (await client.delete("/v1/admin/users/nobody", headers=admin)).status_code == 404
    assert (await client.delete("/v1/admin/users/root", headers=admin)).status_code == 409


async def test_key_last_use_is_written_in_batches(client: httpx.AsyncClient) -> None:
    key_id, key = await new_key(client, "ann")
    accounts = access_of(client).accounts
    for _ in range(5):
        assert (await client.post("/v1/predict", headers=key_header(key))).status_code == 200
    listed = {k.id: k for k in await asyncio.to_thread(accounts.list_keys)}
    assert listed[key_id].last_used_at is None  # not one write per request ...
    await access_of(client).authenticator.flush_key_usage()  # ... but one per flush
    listed = {k.id: k for k in await asyncio.to_thread(accounts.list_keys)}
    last_used = listed[key_id].last_used_at
    assert last_used is not None
    assert abs(time.time() - last_used.timestamp()) < 30


# --- CORS ---


async def test_no_cors_by_default(client: httpx.AsyncClient) -> None:
    response = await client.options(
        "/v1/predict",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in response.headers


async def test_cors_origins_from_settings(sqlite_url: str) -> None:
    settings = make_settings(database_url=sqlite_url, cors_origins=["https://app.example"])
    async with running(settings) as client:
        allowed = await client.options(
            "/v1/predict",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "X-API-Key",
            },
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        other = await client.options(
            "/v1/predict",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in other.headers


# --- the database going away ---


@pytest.mark.postgres
async def test_database_outage_is_a_503_not_a_500(settings_for: Callable[..., Any]) -> None:
    import psycopg

    from tests.serving.services import PG_ADMIN_URL

    with postgres_database() as url:
        async with running(settings_for(url, api_key_cache_ttl=0.1)) as client:
            await create_user(client, "ann", PASSWORD, Role.PREDICT)
            _, key = await new_key(client, "ann")
            name = url.rsplit("/", 1)[1]
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            await asyncio.sleep(0.15)
            response = await client.post("/v1/predict", headers=key_header(key))
            assert response.status_code == 503
            assert response.json()["code"] == "auth_unavailable"
            assert response.headers["Retry-After"] == "5"
            login_response = await client.post(
                "/v1/auth/token", data={"username": "ann", "password": PASSWORD}
            )
            assert login_response.status_code == 503
