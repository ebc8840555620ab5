"""The OpenAPI document: request bodies read after authentication, and a schema that resolves.

Protected routes read their JSON body in a dependency (:data:`serving.api.deps.JsonBody`) so
that it runs after the caller is authenticated; FastAPI then cannot see the body's model, so
the route documents it with :func:`json_body` (``openapi_extra``). :func:`finish` completes the
generated document: pydantic's ``$defs`` inside those bodies move to ``components/schemas``
(``#/$defs/...`` does not resolve inside an OpenAPI document), and the batch limit, a setting,
is filled in where a schema is marked with ``x-batch-max``.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

REF_TEMPLATE = "#/components/schemas/{model}"
BATCH_MAX_MARK = "x-batch-max"


def json_body(tp: Any, *, batch: bool = False, description: str | None = None) -> dict[str, Any]:
    """``openapi_extra`` documenting a required JSON body of type ``tp``; ``batch`` marks the
    list (``tp`` itself, or its list alternative: one item or a list of them) whose
    ``maxItems`` is the ``batch_max`` setting."""
    return _body(tp, "application/json", batch=batch, description=description)


def form_body(tp: Any) -> dict[str, Any]:
    """``openapi_extra`` documenting a required URL-encoded form of the fields of model ``tp``
    (read in a dependency, like a JSON body, so that FastAPI does not read it first)."""
    return _body(tp, "application/x-www-form-urlencoded")


def _body(
    tp: Any, media_type: str, *, batch: bool = False, description: str | None = None
) -> dict[str, Any]:
    schema = TypeAdapter(tp).json_schema(ref_template=REF_TEMPLATE)
    if batch:
        schema = _batch(schema)
    body: dict[str, Any] = {"required": True, "content": {media_type: {"schema": schema}}}
    if description:
        body["description"] = description
    return {"requestBody": body}


def _batch(schema: dict[str, Any]) -> dict[str, Any]:
    if schema.get("type") == "array":
        return {**schema, "minItems": 1, BATCH_MAX_MARK: True}
    if "anyOf" in schema:
        return {**schema, "anyOf": [_batch(s) for s in schema["anyOf"]]}
    return schema


def finish(document: dict[str, Any], batch_max: int) -> dict[str, Any]:
    """Hoist every ``$defs`` into ``components/schemas`` and fill in the batch limit (in place)."""
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for name, schema in node.pop("$defs", {}).items():
                visit(schema)
                schemas.setdefault(name, schema)
            if node.pop(BATCH_MAX_MARK, False):
                node["maxItems"] = batch_max
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(document.get("paths", {}))
    _one_error_body(document)
    return document


def _one_error_body(document: dict[str, Any]) -> None:
    # FastAPI documents a 422 of its own shape (``{"detail": [...]}``) on every operation with
    # parameters; this app answers every error in ErrorResponse's shape.
    error = {"$ref": REF_TEMPLATE.format(model="ErrorResponse")}
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            for status, response in responses.items():
                # A route answering HTML (the drift report) still answers errors as JSON.
                if status >= "400" and "ErrorResponse" in str(response.get("content")):
                    response["content"] = {"application/json": {"schema": error}}
            unprocessable = responses.get("422")
            if unprocessable and "HTTPValidationError" in str(unprocessable):
                unprocessable["content"] = {"application/json": {"schema": error}}
                unprocessable["description"] = "Invalid input (`details` names the fields)"
    schemas = document["components"]["schemas"]
    if "HTTPValidationError" not in str(document.get("paths")):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
