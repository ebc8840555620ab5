"""FastAPI dependencies, as ``Annotated`` aliases: the seam between routes and resources.

Every resource a route uses is reached through one of these, so a test can override it with
``app.dependency_overrides``. They are ``async def`` although they never wait: FastAPI runs a
plain ``def`` dependency in a worker thread, a thread hop per dependency per request. The
resources themselves are created in the app's lifespan and kept on ``app.state`` (see
:mod:`serving.main`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, cast

from fastapi import Depends, Request
from pydantic import TypeAdapter, ValidationError

from serving.api.bodies import JsonDocument, JsonLimits, read_json
from serving.errors import (
    InvalidRequest,
    ModelNotFound,
    UnsupportedMediaType,
    invalid_features_from,
)
from serving.inference.cache import PredictionCache
from serving.inference.model_store import ModelStore
from serving.inference.prediction import PredictionService
from serving.monitoring import request_context
from serving.monitoring.feedback import FeedbackService
from serving.monitoring.request_context import request_id_from
from serving.settings import Settings


async def get_app_settings(request: Request) -> Settings:
    """The settings this app was built with (``create_app``), read once per process."""
    return cast(Settings, request.app.state.settings)


async def get_models(request: Request) -> ModelStore:
    """The process's model store."""
    return cast(ModelStore, request.app.state.models)


async def get_cache(request: Request) -> PredictionCache:
    """The prediction cache."""
    return cast(PredictionCache, request.app.state.cache)


async def get_prediction_service(request: Request) -> PredictionService:
    """The one prediction service."""
    return cast(PredictionService, request.app.state.predictions)


async def get_feedback_service(request: Request) -> FeedbackService:
    """The feedback service (real sale prices into the prediction log)."""
    return cast(FeedbackService, request.app.state.feedback)


async def get_request_id(request: Request) -> str:
    """The id of this request (also in the ``X-Request-ID`` response header)."""
    ctx = request_context.current()
    return ctx.request_id if ctx else request_id_from(request.headers.get("x-request-id"))


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
ModelsDep = Annotated[ModelStore, Depends(get_models)]
CacheDep = Annotated[PredictionCache, Depends(get_cache)]
PredictionServiceDep = Annotated[PredictionService, Depends(get_prediction_service)]
RequestIdDep = Annotated[str, Depends(get_request_id)]
FeedbackServiceDep = Annotated[FeedbackService, Depends(get_feedback_service)]


async def served_model_name(model_name: str, settings: SettingsDep) -> str:
    """The ``{model_name}`` path parameter, when it names the served model (else 404)."""
    return check_model_name(model_name, settings)


ServedModelName = Annotated[str, Depends(served_model_name)]


async def require_json(request: Request) -> None:
    """Refuse a body declared as anything but JSON (415); no Content-Type is taken as JSON."""
    content_type = request.headers.get("content-type")
    if content_type is None:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(
            f"the body is {media or 'untyped'}: send JSON with Content-Type: application/json"
        )


async def json_document(request: Request) -> JsonDocument:
    """The body, JSON within the limits of :mod:`serving.api.bodies` (413 / 422), and what it
    parses to.

    A route's own dependencies run after its router's, so on a protected route the body is
    read only once the caller is authenticated and counted against the rate limit.
    """
    limits: JsonLimits = request.app.state.json_limits
    return await read_json(request.receive, limits)


JsonDocumentDep = Annotated[JsonDocument, Depends(json_document)]


async def json_body(document: JsonDocumentDep) -> bytes:
    """The bytes of :func:`json_document`."""
    return document.body


JsonBody = Annotated[bytes, Depends(json_body)]
"""The raw bytes of a JSON body within the limits; the route's schema validates them."""


def check_model_name(model_name: str, settings: Settings) -> str:
    """``model_name`` if it names the served model, else ``ModelNotFound`` (404)."""
    if model_name != settings.model_name:
        raise ModelNotFound(
            f"no model named {model_name[:64]!r}: this server serves {settings.model_name!r}"
        )
    return model_name


async def path_model_version(request: Request) -> str | None:
    """The ``{model_version}`` path parameter, None on a path without one (production)."""
    version: str | None = request.path_params.get("model_version")
    return version


PathModelVersion = Annotated[str | None, Depends(path_model_version)]


def json_model(tp: Any) -> Callable[..., Awaitable[Any]]:
    """A dependency giving the body validated as ``tp`` (a model, or any type pydantic
    validates), after the route's other checks; document it with
    :func:`serving.api.openapi.json_body`."""
    adapter: TypeAdapter[Any] = TypeAdapter(tp)

    async def dependency(body: JsonBody) -> Any:
        try:
            return adapter.validate_json(body)
        except ValidationError as exc:
            errors = exc.errors(include_input=False)
            raise invalid_features_from(errors, ("body",), InvalidRequest) from None

    dependency.__name__ = "json_model_body"
    return dependency
