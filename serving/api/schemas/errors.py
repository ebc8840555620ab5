"""The error body every endpoint returns on failure (see :mod:`serving.errors`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorResponse(BaseModel):
    """``{"error": message, "code": code, "details": ...}`` (``error`` is a string, as the
    Open Inference Protocol requires)."""

    error: str = Field(description="What went wrong, for people.")
    code: str = Field(description="Stable machine-readable code, e.g. `model_not_ready`.")
    details: Any = Field(None, description="For validation errors: `[{loc, msg, type}]`.")


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
