"""Access-control settings: the secret refused outside development, limits and Redis chosen."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from serving.access.principals import Role
from serving.access.ratelimit import LocalLimiter, RedisLimiter
from serving.access.tokens import TokensDisabled, TokenService
from serving.api.security import close_auth, open_auth
from serving.settings import DEFAULT_JWT_SECRET, Settings, describe_errors
from tests.serving.auth_support import TEST_SECRET, make_settings
from tests.serving.services import REDIS_URL

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize("env", ["production", "test"])
def test_tokens_refuse_the_default_or_a_short_secret_outside_development(env: str) -> None:
    # Reading the settings never fails for the secret: only tokens need it.
    unset = Settings(env=env, jwt_secret=DEFAULT_JWT_SECRET)
    short = Settings(env=env, jwt_secret="short-secret")
    assert "CARPRICE_JWT_SECRET is not set" in (unset.jwt_secret_problem or "")
    assert "shorter than 32" in (short.jwt_secret_problem or "")
    for settings in (unset, short):
        with pytest.raises(TokensDisabled, match="CARPRICE_JWT_SECRET"):
            TokenService.from_settings(settings)
    good = Settings(env=env, jwt_secret=TEST_SECRET)
    assert good.jwt_secret_problem is None
    tokens = TokenService.from_settings(good)
    assert tokens.decode(tokens.issue(1, Role.PREDICT).access_token).user_id == 1


def test_development_may_use_the_default_secret() -> None:
    settings = Settings(env="development")
    assert settings.jwt_secret == DEFAULT_JWT_SECRET
    assert settings.jwt_secret_problem is None
    TokenService.from_settings(settings)


def test_a_bad_setting_is_described_in_one_line_naming_the_variable() -> None:
    with pytest.raises(ValidationError) as bad:
        Settings(batch_max="many", jwt_algorithm="none", MLFLOW_TRACKING_URI=3)
    line = describe_errors(bad.value)
    assert "\n" not in line
    assert "CARPRICE_BATCH_MAX: Input should be a valid integer" in line
    assert "CARPRICE_JWT_ALGORITHM: " in line
    assert "MLFLOW_TRACKING_URI: " in line
    assert "many" not in line  # values are not echoed (a secret could be one)


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
