"""JWT access tokens (python-jose): issued at login, verified on every token-authenticated call.

One symmetric algorithm (HS256 by default) and one secret, both from settings. Decoding accepts
only that algorithm (no ``none``, no RS/HS confusion) and requires ``sub``, ``role``, ``iat``,
``exp``, ``iss`` and ``aud``; ``nbf`` is honoured when present; ``jwt_leeway`` seconds of clock
skew are tolerated on the time claims.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from jose import jwt

from serving.access.principals import AccessError, NotAuthenticated, Role
from serving.settings import Settings

MAX_TOKEN_LENGTH = 4096
"""Longer bearer tokens are refused before any parsing (ours are ~250 characters)."""


class InvalidToken(NotAuthenticated):
    """The bearer token is malformed, forged, expired or otherwise unacceptable."""


class TokensDisabled(AccessError):  # noqa: N818 - named for what happened
    """No usable JWT secret here: tokens can be neither issued nor verified (API keys still
    work). The message says which variable to set and how."""


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A new access token and its lifetime in seconds."""

    access_token: str
    expires_in: int
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret


@dataclass(frozen=True, slots=True)
class Claims:
    """The verified claims of an access token."""

    user_id: int
    role: Role
    issued_at: int
    expires_at: int


class TokenService:
    """Issues and verifies access tokens with one secret and one algorithm."""

    def __init__(
        self,
        secret: str,
        *,
        algorithm: str = "HS256",
        issuer: str = "carprice",
        audience: str = "carprice-api",
        ttl: int = 3600,
        leeway: int = 10,
    ) -> None:
        if not secret:
            raise ValueError("a JWT secret is required")
        self._secret = secret
        self.algorithm = algorithm
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl
        self.leeway = leeway
        self._options: dict[str, Any] = {
            "require_exp": True,
            "require_iat": True,
            "require_aud": True,
            "require_iss": True,
            "require_sub": True,
            "leeway": leeway,
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenService:
        """The token service the settings describe.

        Raises:
            TokensDisabled: the secret is the placeholder or too short outside development.
        """
        problem = settings.jwt_secret_problem
        if problem is not None:
            raise TokensDisabled(problem)
        return cls(
            settings.jwt_secret,
            algorithm=settings.jwt_algorithm,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            ttl=settings.jwt_ttl,
            leeway=settings.jwt_leeway,
        )

    def issue(self, user_id: int, role: Role, *, now: float | None = None) -> IssuedToken:
        """A signed token for ``user_id`` acting as ``role``, valid for ``ttl`` seconds."""
        iat = int(time.time() if now is None else now)
        claims = {
            "sub": str(user_id),
            "role": str(role),
            "iat": iat,
            "exp": iat + self.ttl,
            "iss": self.issuer,
            "aud": self.audience,
        }
        token = jwt.encode(claims, self._secret, algorithm=self.algorithm)
        return IssuedToken(access_token=token, expires_in=self.ttl)

    def decode(self, token: str) -> Claims:
        """The verified claims of ``token``; ``InvalidToken`` for anything wrong with it."""
        if len(token) > MAX_TOKEN_LENGTH or not token.isascii() or token.count(".") != 2:
            raise InvalidToken("malformed token")
        try:
            header = jwt.get_unverified_header(token)
            # Checked here as well as by jose (algorithms=[...]): only the configured one.
            if header.get("alg") != self.algorithm:
                raise InvalidToken(f"algorithm {header.get('alg')!r} not accepted")
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                options=self._options,
            )
            return self._claims(payload)
        except InvalidToken:
            raise
        except Exception as exc:
            # jose raises JWTError for most problems, but TypeError/OverflowError for odd
            # claim values ({"exp": {}}, 1e999): whatever it is, the token is simply invalid.
            raise InvalidToken(f"{type(exc).__name__}: {exc}") from None

    def _claims(self, payload: dict[str, Any]) -> Claims:
        sub, role, iat, exp = (payload.get(k) for k in ("sub", "role", "iat", "exp"))
        if not isinstance(sub, str) or not sub.isdigit() or len(sub) > 18:
            raise InvalidToken("bad sub")
        if role not in (Role.PREDICT.value, Role.ADMIN.value):
            raise InvalidToken("bad role")
        if not isinstance(iat, int) or not isinstance(exp, int) or isinstance(iat, bool):
            raise InvalidToken("bad time claims")
        # jose only checks that iat is a number; a token from the future is not valid yet.
        if iat > time.time() + self.leeway:
            raise InvalidToken("issued in the future")
        return Claims(user_id=int(sub), role=Role(role), issued_at=iat, expires_at=exp)
