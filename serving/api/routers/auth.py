"""``/v1/auth``: exchange a user name and password for a bearer token; say who is calling."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException

from serving.access.principals import Role
from serving.api.openapi import form_body
from serving.api.schemas.errors import error_responses
from serving.api.security import AccessDep, PrincipalDep, limit_login
from serving.errors import InvalidRequest, LimitExceeded, invalid_features_from

router = APIRouter(prefix="/v1/auth", tags=["auth"])


class TokenResponse(BaseModel):
    """An OAuth2 access token (RFC 6749 section 5.1)."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - OAuth2 token type, not a secret
    expires_in: int
    """Seconds until the token expires."""


class LoginForm(BaseModel):
    """The OAuth2 password grant's form (RFC 6749 section 4.3.2)."""

    model_config = ConfigDict(extra="ignore")

    grant_type: str | None = Field(None, pattern="^password$")
    username: str
    password: str
    scope: str = ""
    client_id: str | None = None
    client_secret: str | None = None


LOGIN_FIELDS_MAX = len(LoginForm.model_fields)
"""Most fields a login form may hold (those of the password grant): 422 ``limit_exceeded``
past it, decided as the fields are parsed (the body is already within
``CARPRICE_MAX_SMALL_BODY_BYTES``)."""


async def login_form(
    request: Request, _counted: Annotated[None, Depends(limit_login)]
) -> LoginForm:
    """The login form, read and parsed only once the attempt was counted against the login
    rate limit (a form parameter would be read by FastAPI before any dependency runs)."""
    try:
        form = await request.form(max_files=0, max_fields=LOGIN_FIELDS_MAX)
    except HTTPException:
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "application/x-www-form-urlencoded":
            raise  # multipart: a malformed one is Starlette's 400
        # Starlette's 400 of a URL-encoded form: past max_fields, the only limit the body's
        # size (CARPRICE_MAX_SMALL_BODY_BYTES) leaves reachable.
        message = f"the login form holds more than {LOGIN_FIELDS_MAX} fields"
        raise LimitExceeded(
            message, [{"loc": "body", "msg": message, "type": "too_many_fields"}]
        ) from None
    try:
        return LoginForm.model_validate(dict(form))
    except ValidationError as exc:
        errors = exc.errors(include_input=False)
        raise invalid_features_from(errors, ("body",), InvalidRequest) from None


class Me(BaseModel):
    """The authenticated caller."""

    username: str
    role: Role
    via: Literal["token", "api_key"]


@router.post(
    "/token",
    response_model=TokenResponse,
    responses=error_responses(400, 401, 413, 415, 422, 429, 503),
    openapi_extra=form_body(LoginForm),
)
async def issue_token(
    form: Annotated[LoginForm, Depends(login_form)],
    access: AccessDep,
    response: Response,
) -> TokenResponse:
    """Log in with a user name and password (OAuth2 password form) and get a bearer token."""
    issued = await access.login(form.username, form.password)
    # RFC 6749 5.1: responses carrying tokens must not be cached.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return TokenResponse(access_token=issued.access_token, expires_in=issued.expires_in)


@router.get("/me", response_model=Me, responses=error_responses(401, 429, 503))
async def who_am_i(principal: PrincipalDep) -> Me:
    """The user behind the presented token or API key, and their role."""
    return Me(username=principal.username, role=principal.role, via=principal.via)
