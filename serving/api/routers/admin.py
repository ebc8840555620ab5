"""``/v1/admin``: reload the production model now; manage users and API keys. ``admin`` only."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, TypeVar

import anyio
from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import BaseModel, Field

from serving.access.accounts import USERNAME_PATTERN, KeyInfo, UserInfo
from serving.access.passwords import MAX_LENGTH, MIN_LENGTH, PasswordPolicyError
from serving.access.principals import Role, UnknownApiKey, UnknownUser, UserExists
from serving.api.deps import ModelsDep, json_model
from serving.api.openapi import json_body
from serving.api.schemas.errors import BODY, PROTECTED, error_responses
from serving.api.security import AccessDep, AdminPrincipal, require_role

T = TypeVar("T")

router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[Depends(require_role(Role.ADMIN))],
    responses=error_responses(*PROTECTED),
)


async def _run(fn: Callable[..., T], *args: object) -> T:
    # Database work off the event loop; the caches are then touched back on the loop.
    return await anyio.to_thread.run_sync(fn, *args)


class ReloadResult(BaseModel):
    """What the reload found: whether the served version changed, and what is served now."""

    changed: bool
    model_version: str | None
    """The production version now served (``None`` if none could be loaded yet)."""
    status: str
    """The model store's status line (why nothing changed, when nothing did)."""


class UserOut(BaseModel):
    """A user (never the password hash)."""

    id: int
    username: str
    role: Role
    created_at: datetime

    @classmethod
    def of(cls, user: UserInfo) -> UserOut:
        return cls(id=user.id, username=user.username, role=user.role, created_at=user.created_at)


class NewUser(BaseModel):
    """A user to create."""

    username: str = Field(min_length=1, max_length=64, pattern=f"^{USERNAME_PATTERN.pattern}$")
    password: str = Field(min_length=MIN_LENGTH, max_length=MAX_LENGTH)
    role: Role = Role.PREDICT


class KeyOut(BaseModel):
    """An API key (never the secret)."""

    id: int
    prefix: str
    username: str
    name: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: KeyInfo) -> KeyOut:
        return cls(
            id=key.id,
            prefix=key.prefix,
            username=key.username,
            name=key.name,
            created_at=key.created_at,
            last_used_at=key.last_used_at,
            revoked_at=key.revoked_at,
        )


class NewKeyRequest(BaseModel):
    """A key to create for a user."""

    username: str = Field(min_length=1, max_length=64)
    name: str | None = Field(default=None, max_length=100)


class CreatedKey(KeyOut):
    """A new key: ``key`` is shown this once and never again."""

    key: str


NewUserBody = Annotated[NewUser, Depends(json_model(NewUser))]
NewKeyBody = Annotated[NewKeyRequest, Depends(json_model(NewKeyRequest))]


@router.post("/reload", response_model=ReloadResult, responses=error_responses(503))
async def reload_model(models: ModelsDep) -> ReloadResult:
    """Re-resolve the production alias now instead of waiting for the next poll."""
    changed = await models.refresh()
    production = models.production
    return ReloadResult(
        changed=changed,
        model_version=production.version if production is not None else None,
        status=models.status,
    )


@router.get("/users", response_model=list[UserOut])
async def list_users(access: AccessDep) -> list[UserOut]:
    """Every user."""
    return [UserOut.of(u) for u in await _run(access.accounts.list_users)]


@router.post(
    "/users",
    response_model=UserOut,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(*BODY, 409),
    openapi_extra=json_body(NewUser),
)
async def create_user(body: NewUserBody, access: AccessDep) -> UserOut:
    """Create a user with a password and a role."""
    try:
        user = await _run(access.accounts.create_user, body.username, body.password, body.role)
    except UserExists:
        raise HTTPException(status.HTTP_409_CONFLICT, "user already exists") from None
    except (PasswordPolicyError, ValueError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    return UserOut.of(user)


@router.delete(
    "/users/{username}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(404, 409, 422),
)
async def delete_user(username: str, access: AccessDep, admin: AdminPrincipal) -> None:
    """Delete a user and their API keys; their tokens stop working."""
    if username == admin.username:
        raise HTTPException(status.HTTP_409_CONFLICT, "you cannot delete yourself")
    try:
        user = await _run(access.accounts.delete_user, username)
    except UnknownUser:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such user") from None
    # Honoured at once in this process; other workers within the cache TTL.
    access.authenticator.forget_user(user.id)
    access.authenticator.keys.cache.clear()


@router.get("/keys", response_model=list[KeyOut])
async def list_keys(
    access: AccessDep, username: Annotated[str | None, Query(max_length=64)] = None
) -> list[KeyOut]:
    """Every API key (of one user with ``?username=``), revoked ones included."""
    return [KeyOut.of(k) for k in await _run(access.accounts.list_keys, username)]


@router.post(
    "/keys",
    response_model=CreatedKey,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(*BODY, 404),
    openapi_extra=json_body(NewKeyRequest),
)
async def create_key(body: NewKeyBody, access: AccessDep) -> CreatedKey:
    """Create an API key for a user; the key is in this response only."""
    try:
        new = await _run(access.accounts.create_key, body.username, body.name)
    except UnknownUser:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such user") from None
    return CreatedKey(**KeyOut.of(new.info).model_dump(), key=new.key)


@router.delete("/keys/{key_id}", response_model=KeyOut, responses=error_responses(404, 422))
async def revoke_key(key_id: int, access: AccessDep) -> KeyOut:
    """Revoke an API key (all workers refuse it within ``api_key_cache_ttl`` seconds)."""
    try:
        info = await _run(access.accounts.revoke_key, key_id)
    except UnknownApiKey:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such key") from None
    access.authenticator.keys.forget(info.prefix)
    return KeyOut.of(info)
