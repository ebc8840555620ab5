"""Errors -> HTTP: the one place that maps domain, validation and HTTP errors to responses.

Every error answer has one body shape::

    {"error": "no model is ready to serve: ...", "code": "model_not_ready", "details": null}

``error`` is the message, a string, because the Open Inference Protocol (/v2) says so and its
clients (``tritonclient``) read it as one; ``code`` is stable for programs, ``details`` lists
the fields at fault for validation errors (else null).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from serving.api.refusals import HELD_CODES, Refusal
from serving.errors import (
    ClientDisconnected,
    FeedbackExists,
    InvalidFeatures,
    InvalidFeedback,
    InvalidJson,
    Misconfigured,
    ModelNotFound,
    ModelNotReady,
    ModelUnservable,
    PayloadTooLarge,
    PredictionFailed,
    PredictionLogUnavailable,
    RegistryUnavailable,
    ServingError,
    UnknownPrediction,
    UnsupportedMediaType,
    UnsupportedRequest,
    short_text,
    validation_details,
    validation_message,
)

log = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499
"""The status logged (and counted) for a request whose client went away before it was read
(nginx's convention); nobody receives it."""

_STATUS: dict[type[ServingError], int] = {
    ModelNotReady: 503,
    ModelNotFound: 404,
    ModelUnservable: 409,
    RegistryUnavailable: 503,
    InvalidFeatures: 422,
    PayloadTooLarge: 413,
    ClientDisconnected: CLIENT_CLOSED_REQUEST,
    Misconfigured: 503,
    UnsupportedRequest: 400,
    UnsupportedMediaType: 415,
    PredictionFailed: 500,
    UnknownPrediction: 404,
    FeedbackExists: 409,
    InvalidFeedback: 422,
    PredictionLogUnavailable: 503,
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
    """A JSON response with the error body shape; a refusal (:data:`~serving.api.refusals.
    HELD_CODES`) is a :class:`~serving.api.refusals.Refusal`, held before it is sent."""
    cls = Refusal if code in HELD_CODES else JSONResponse
    return cls(error_body(code, message, details), status_code=status, headers=headers)


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
        return serving_error_response(InvalidJson())
    return error_response(
        422, "invalid_request", validation_message(errors), validation_details(errors)
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
    if status == 405:
        # Starlette names the methods of the first route matching the path only.
        headers = (headers or {}) | {"Allow": ", ".join(allowed_methods(request))}
    return error_response(status, code, short_text(message), headers=headers)


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app answers on the request's path (for ``Allow``)."""
    routes = request.app.router.routes
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in routes):
            allowed.append(method)
    return allowed


def install_error_handlers(app: FastAPI) -> None:
    """Map domain, validation and HTTP errors to the error body shape on ``app``.

    Unexpected exceptions become a 500 with the same shape in
    :class:`serving.api.middleware.RequestContextMiddleware`, which also logs them.
    """
    app.add_exception_handler(ServingError, _on_serving_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(HTTPException, _on_http_error)
