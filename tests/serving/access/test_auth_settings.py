"""Access-control settings: the secret refused outside development, limits and Redis chosen."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from serving.access.ratelimit import LocalLimiter, RedisLimiter
from serving.api.security import close_auth, open_auth
from serving.settings import DEFAULT_JWT_SECRET, Settings
from tests.serving.auth_support import REDIS_URL, TEST_SECRET, make_settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize("env", ["production", "test"])
def test_the_default_or_a_short_secret_is_refused_outside_development(env: str) -> None:
    with pytest.raises(ValidationError, match="CARPRICE_JWT_SECRET"):
        Settings(env=env, jwt_secret=DEFAULT_JWT_SECRET)
    with pytest.raises(ValidationError, match="at least 32"):
        Settings(env=env, jwt_secret="short-secret")
    assert Settings(env=env, jwt_secret=TEST_SECRET).jwt_secret == TEST_SECRET


def test_development_may_use_the_default_secret() -> None:
    assert Settings(env="development").jwt_secret == DEFAULT_JWT_SECRET


def test_only_hmac_algorithms_can_be_configured() -> None:
    with pytest.raises(ValidationError):
        make_settings(jwt_algorithm="none")
    with pytest.raises(ValidationError):
        make_settings(jwt_algorithm="RS256")


async def test_rate_limits_use_ratelimit_url_else_cache_url_else_the_process() -> None:
    for overrides, expected in (
        ({"ratelimit_url": REDIS_URL}, RedisLimiter),
        ({"cache_url": REDIS_URL}, RedisLimiter),
        ({}, LocalLimiter),
    ):
        state = SimpleNamespace()
        access = await open_auth(state, make_settings(**overrides))
        try:
            assert isinstance(access.limiter, expected)
        finally:
            await close_auth(state)
        assert not hasattr(state, "access")


async def test_a_bad_rate_limit_fails_at_start_up() -> None:
    with pytest.raises(ValueError, match="rate limit"):
        await open_auth(SimpleNamespace(), make_settings(rate_limit="lots"))


async def test_start_up_can_leave_migrations_to_the_cli(tmp_path: object) -> None:
    from serving.store.database import current_revision

    url = f"sqlite:///{tmp_path}/later.db"
    state = SimpleNamespace()
    await open_auth(state, make_settings(database_url=url, database_migrate_on_start=False))
    await close_auth(state)
    assert current_revision(url) is None
