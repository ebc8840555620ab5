"""The error body every endpoint returns on failure (see :mod:`serving.errors`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    """What went wrong: a stable code, a sentence, and (for validation) the fields at fault."""

    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    """``{"error": {"code", "message", "details"}}``."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in (
        (404, "Unknown model or version"),
        (413, "Body larger than the configured limit"),
        (422, "Invalid input: `details` names the fields"),
        (503, "No model ready (or the registry is unavailable)"),
    )
}
"""OpenAPI ``responses=`` entries for the error statuses of prediction endpoints."""
