"""Domain errors of the serving half, and the one place that turns errors into HTTP responses.

Inside the app code raises what went wrong (:class:`ModelNotReady`, :class:`InvalidFeatures`,
...) and knows nothing of status codes. :func:`install_error_handlers` maps those, FastAPI's
validation errors and Starlette's HTTP errors to one body shape::

    {"error": "no model is ready to serve: ...", "code": "model_not_ready", "details": null}

``error`` is the message, a string, because the Open Inference Protocol (/v2) says so and its
clients (``tritonclient``) read it as one; ``code`` is stable for programs, ``details`` lists
the fields at fault for validation errors (else null).

Validation details say which field is wrong and why, never the value sent (a huge or hostile
input is not echoed back), and at most :data:`MAX_DETAILS` of them are listed.

The errors are named for what happened (``ModelNotReady``), as the style guide names them,
not with an ``Error`` suffix.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)

MAX_DETAILS = 10
"""Most validation problems listed in one error body."""
_MAX_TEXT = 200


class ServingError(Exception):
    """Base of the domain errors: a stable machine ``code``, a message for people, details."""

    code = "serving_error"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ModelNotReady(ServingError):  # noqa: N818 - named for what happened
    """No model is loaded and smoke-tested yet (start-up, or no version has the alias)."""

    code = "model_not_ready"


class ModelNotFound(ServingError):  # noqa: N818 - named for what happened
    """The model name or version asked for is not registered."""

    code = "model_not_found"


class ModelUnservable(ServingError):  # noqa: N818 - named for what happened
    """A registered version that fails to load, its smoke test or the signature check."""

    code = "model_unservable"


class RegistryUnavailable(ServingError):  # noqa: N818 - named for what happened
    """The MLflow registry did not answer (in time)."""

    code = "registry_unavailable"


class InvalidFeatures(ServingError):  # noqa: N818 - named for what happened
    """The cars sent are not valid input (``details`` lists the fields)."""

    code = "invalid_features"


class UnsupportedRequest(ServingError):  # noqa: N818 - named for what happened
    """A well-formed request for something this server does not do (e.g. binary tensors)."""

    code = "unsupported_request"


class UnsupportedMediaType(ServingError):  # noqa: N818 - named for what happened
    """A body that is not JSON."""

    code = "unsupported_media_type"


class PredictionFailed(ServingError):  # noqa: N818 - named for what happened
    """The model produced no usable price (a fault of the model, not of the input)."""

    code = "prediction_failed"


_STATUS: dict[type[ServingError], int] = {
    ModelNotReady: 503,
    ModelNotFound: 404,
    ModelUnservable: 409,
    RegistryUnavailable: 503,
    InvalidFeatures: 422,
    UnsupportedRequest: 400,
    UnsupportedMediaType: 415,
    PredictionFailed: 500,
}
_RETRY_AFTER = {ModelNotReady: "5", RegistryUnavailable: "5"}

# Codes for plain HTTP errors raised by the framework (unknown route, wrong method, ...).
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
}


def status_of(exc: ServingError) -> int:
    """The HTTP status of a domain error."""
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 500


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """The one error body shape."""
    return {"error": message, "code": code, "details": details}


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A JSON response with the error body shape."""
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


def _short(text: object) -> str:
    s = str(text)
    return s if len(s) <= _MAX_TEXT else s[: _MAX_TEXT - 3] + "..."


def validation_details(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic/FastAPI errors as ``{"loc", "msg", "type"}`` without the input value.

    Locations are joined with dots (``body.3.year``); every part is shortened, since even a
    key of the request can be huge.
    """
    out: list[dict[str, Any]] = []
    for err in list(errors)[:MAX_DETAILS]:
        loc = ".".join(_short(part)[:64] for part in err.get("loc", ()))
        out.append({"loc": loc, "msg": _short(err.get("msg", "")), "type": err.get("type", "")})
    return out


def invalid_features_from(
    errors: Sequence[Any], prefix: tuple[str | int, ...] = ()
) -> InvalidFeatures:
    """An :class:`InvalidFeatures` from pydantic errors (``prefix`` is prepended to locations)."""
    fixed = [{**e, "loc": (*prefix, *e.get("loc", ()))} for e in errors]
    return InvalidFeatures(_validation_message(fixed), validation_details(fixed))


def _validation_message(errors: Sequence[Any]) -> str:
    n = len(errors)
    if n == 0:
        return "invalid request"
    first = errors[0]
    loc = ".".join(_short(p)[:64] for p in first.get("loc", ()))
    more = f" (and {n - 1} more problem{'s' if n > 2 else ''})" if n > 1 else ""
    return _short(f"{loc}: {first.get('msg', 'invalid')}") + more


async def _on_serving_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServingError)
    return serving_error_response(exc)


def serving_error_response(exc: ServingError) -> JSONResponse:
    """The response for a domain error: its status, ``Retry-After`` where it helps, the body."""
    status = status_of(exc)
    if status >= 500 and status != 503:
        log.error("%s: %s", exc.code, exc.message)
    retry = next((v for k, v in _RETRY_AFTER.items() if isinstance(exc, k)), None)
    headers = {"Retry-After": retry} if retry else None
    return error_response(status, exc.code, exc.message, exc.details, headers)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(422, "invalid_json", "the body is not valid JSON")
    return error_response(
        422, "invalid_request", _validation_message(errors), validation_details(errors)
    )


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    code = _HTTP_CODES.get(status, "http_error")
    try:
        default = HTTPStatus(status).phrase
    except ValueError:
        default = "error"
    message = exc.detail if isinstance(exc.detail, str) and exc.detail else default
    headers = dict(exc.headers) if exc.headers else None
    return error_response(status, code, _short(message), headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Map domain, validation and HTTP errors to the error body shape on ``app``.

    Unexpected exceptions become a 500 with the same shape in
    :class:`serving.middleware.RequestContextMiddleware`, which also logs them.
    """
    app.add_exception_handler(ServingError, _on_serving_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(HTTPException, _on_http_error)
