"""Who is calling: roles, the authenticated principal, and the access-control domain errors.

The errors carry no HTTP; ``serving.api.security`` says which status and headers each one becomes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


class Role(StrEnum):
    """What a principal may do: ``predict`` calls the model, ``admin`` also administers."""

    PREDICT = "predict"
    ADMIN = "admin"


_GRANTS: dict[Role, frozenset[Role]] = {
    Role.PREDICT: frozenset({Role.PREDICT}),
    Role.ADMIN: frozenset({Role.PREDICT, Role.ADMIN}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the user behind a token or an API key, with the user's role."""

    user_id: int
    username: str
    role: Role
    via: Literal["token", "api_key"]
    key_id: int | None = None

    def has(self, role: Role) -> bool:
        """Whether this principal's role includes ``role``."""
        return role in _GRANTS[self.role]

    @property
    def caller(self) -> str:
        """Who asked, as the prediction log records it: the user name, or ``key:<id>`` for an
        API key (its id, never the key)."""
        if self.via == "api_key" and self.key_id is not None:
            return f"key:{self.key_id}"
        return self.username

    @property
    def limit_key(self) -> str:
        """Rate-limit bucket: per user, so a user's tokens and keys share one budget."""
        return f"user:{self.user_id}"


class AccessError(Exception):
    """Base of the access-control errors (authentication, authorisation, rate limits)."""


class NotAuthenticated(AccessError):  # noqa: N818 - named for what happened
    """No valid credentials. The ``reason`` is for logs only: clients get a generic message.

    ``presented`` says whether credentials were sent at all (RFC 6750 adds
    ``error="invalid_token"`` to the challenge only then).
    """

    def __init__(self, reason: str, *, presented: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.presented = presented


class Forbidden(AccessError):  # noqa: N818 - named for what happened
    """A valid principal without the role an endpoint needs."""

    def __init__(self, principal: Principal, required: Role) -> None:
        super().__init__(f"{principal.username} ({principal.role}) lacks role {required}")
        self.principal = principal
        self.required = required


class UnknownUser(LookupError):  # noqa: N818 - named for what happened
    """No user of that name (administration, not authentication: that stays generic)."""


class UnknownApiKey(LookupError):  # noqa: N818 - named for what happened
    """No API key of that id."""


class UserExists(ValueError):  # noqa: N818 - named for what happened
    """A user of that name already exists."""
