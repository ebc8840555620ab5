"""The error body every endpoint returns on failure (see :mod:`serving.errors`), and the
OpenAPI ``responses=`` entries that document it per status."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorResponse(BaseModel):
    """``{"error": message, "code": code, "details": ...}`` (``error`` is a string, as the
    Open Inference Protocol requires)."""

    error: str = Field(description="What went wrong, for people.")
    code: str = Field(description="Stable machine-readable code, e.g. `model_not_ready`.")
    details: Any = Field(None, description="For validation errors: `[{loc, msg, type}]`.")


STATUS_TEXT: dict[int, str] = {
    400: "A request this server does not support (e.g. binary tensor data)",
    401: "Missing or invalid credentials (`WWW-Authenticate` says which scheme)",
    403: "The caller's role does not allow this",
    404: "Unknown model, version, user or key",
    409: "Conflict: a version that cannot be served, a user that exists, deleting yourself",
    413: "Body larger than the configured limit (bytes, or values in the JSON)",
    415: "Body not JSON (`Content-Type`), or a `Content-Encoding` the server does not decode",
    422: "Invalid input: not JSON (`invalid_json`), over a shape limit (`limit_exceeded`), or "
    "invalid fields (`details` names them)",
    429: "Rate limit exceeded (`Retry-After` says when to retry)",
    503: "No model ready, or the registry or user database is unavailable (`Retry-After`)",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries, the one error body for each of ``statuses``."""
    return {s: {"model": ErrorResponse, "description": STATUS_TEXT[s]} for s in statuses}


PROTECTED = (401, 403, 429, 503)
"""What every route behind a role answers besides its own errors (503: user database down)."""
BODY = (413, 415, 422)
"""What every route reading a JSON body answers besides its own errors."""

ERROR_RESPONSES = error_responses(404, 413, 422, 503)
"""The error statuses of the prediction endpoints' models and bodies (kept for callers)."""

FEEDBACK_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in (
        (404, "A request id / row is not in the prediction log (`details` lists them)"),
        (409, "A car's real price was already reported; the first report stays"),
        (413, "Body larger than the configured limit"),
        (422, "Invalid report: a price that is not a positive finite number, too many reports"),
        (503, "The prediction log's database is unavailable"),
    )
}
"""OpenAPI ``responses=`` entries of ``POST /v1/feedback``."""
