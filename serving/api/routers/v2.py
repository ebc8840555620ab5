"""/v2: the Open Inference Protocol (KServe / Triton "V2" REST): health, metadata, infer.

Bodies are read whatever their Content-Type (``tritonclient`` sends none) and validated by
:mod:`serving.api.schemas.v2`. Readiness is 200 only while a production model is loaded and
smoke-tested; it does not depend on the cache.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Response

from serving.access.principals import Role
from serving.api.deps import (
    JsonDocumentDep,
    ModelsDep,
    PathModelVersion,
    PredictionServiceDep,
    RequestIdDep,
    ServedModelName,
)
from serving.api.endpoints import V2_INFER, respond
from serving.api.openapi import json_body
from serving.api.schemas import v2
from serving.api.schemas.errors import BODY, PROTECTED, error_responses
from serving.api.security import AccessDep, PredictPrincipal, require_role
from serving.errors import Misconfigured, ModelNotReady

router = APIRouter(prefix="/v2", tags=["v2 (Open Inference Protocol)"])
# Server metadata and health stay open (probes); everything under /v2/models needs `predict`.
_PREDICT = [Depends(require_role(Role.PREDICT))]
_MODEL_ERRORS = error_responses(*PROTECTED, 404, 409)
_INFER_ERRORS = error_responses(*PROTECTED, 400, 404, 409, *BODY)

SERVER_NAME = "carprice"
BinaryHeader = Annotated[
    str | None, Header(alias="Inference-Header-Content-Length", include_in_schema=False)
]
_INFER_BODY: dict[str, Any] = json_body(v2.InferenceRequest)
# The one infer route serves two paths; the versioned one's parameter is declared here (the
# route reads it with PathModelVersion, as the other path has none).
_VERSION_PARAMETER: dict[str, Any] = {
    "name": "model_version",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "title": "Model Version"},
}


async def refuse_binary_data(binary_header: BinaryHeader = None) -> None:
    """400 for the binary tensor extension, before the body is read (it is not JSON)."""
    v2.refuse_binary(binary_header)


# After the role check: the binary header is refused before the body is read.
_INFER = [*_PREDICT, Depends(refuse_binary_data)]


def server_version() -> str:
    """The installed carprice package version."""
    try:
        return version("carprice")
    except PackageNotFoundError:
        return "0+unknown"


@router.get("")
@router.get("/", include_in_schema=False)  # the protocol's spelling, answered (not redirected)
async def server_metadata() -> v2.ServerMetadata:
    """Server name, version and protocol extensions (none)."""
    return v2.ServerMetadata(name=SERVER_NAME, version=server_version(), extensions=[])


@router.get("/health/live")
async def live() -> v2.Liveness:
    """200 whenever the process is up."""
    return v2.Liveness(live=True)


@router.get("/health/ready", responses=error_responses(503))
async def ready(models: ModelsDep, access: AccessDep) -> v2.Readiness:
    """200 while a production model is loaded and smoke-tested and the server is configured
    (a JWT secret outside development), else 503 saying why."""
    if access.unready_reason is not None:
        raise Misconfigured(f"not ready: {access.unready_reason}")
    models.require_production()
    return v2.Readiness(ready=True)


@router.get("/models/{model_name}", dependencies=_PREDICT, responses=_MODEL_ERRORS)
async def model_metadata(name: ServedModelName, models: ModelsDep) -> v2.ModelMetadata:
    """Inputs, output and registered versions of the model."""
    versions = [v.version for v in await models.list_versions()]
    return v2.model_metadata(name, versions)


@router.get(
    "/models/{model_name}/versions/{model_version}",
    dependencies=_PREDICT,
    responses=_MODEL_ERRORS,
)
async def version_metadata(
    name: ServedModelName, model_version: str, models: ModelsDep
) -> v2.ModelMetadata:
    """Inputs and output of one registered version (404 if it is not registered)."""
    info = await models.version_info(model_version)
    return v2.model_metadata(name, [info.version])


@router.get("/models/{model_name}/ready", dependencies=_PREDICT, responses=_MODEL_ERRORS)
async def model_ready(name: ServedModelName, models: ModelsDep) -> v2.ModelReadiness:
    """200 while the production model is loaded and smoke-tested, else 503."""
    if not models.ready:
        raise ModelNotReady(f"{name} is not ready: {models.status}")
    return v2.ModelReadiness(name=name, ready=True)


@router.get(
    "/models/{model_name}/versions/{model_version}/ready",
    dependencies=_PREDICT,
    responses=_MODEL_ERRORS,
)
async def version_ready(
    name: ServedModelName, model_version: str, models: ModelsDep
) -> v2.ModelReadiness:
    """200 once that version is loaded (it is loaded on demand), 404 if not registered."""
    await models.get(model_version)
    return v2.ModelReadiness(name=name, ready=True)


@router.post(
    "/models/{model_name}/infer",
    dependencies=_INFER,
    responses=_INFER_ERRORS,
    openapi_extra=_INFER_BODY,
    response_model=v2.InferenceResponse,
    response_model_exclude_none=True,
)
@router.post(
    "/models/{model_name}/versions/{model_version}/infer",
    dependencies=_INFER,
    responses=_INFER_ERRORS,
    openapi_extra=_INFER_BODY | {"parameters": [_VERSION_PARAMETER]},
    response_model=v2.InferenceResponse,
    response_model_exclude_none=True,
)
async def infer(
    name: ServedModelName,
    model_version: PathModelVersion,
    document: JsonDocumentDep,
    service: PredictionServiceDep,
    request_id: RequestIdDep,
    principal: PredictPrincipal,
) -> Response:
    """Price the cars in the request with the production model, or with the registered
    version the path names (loaded on demand)."""
    return await respond(
        V2_INFER,
        service,
        document,
        version=model_version,
        request_id=request_id,
        caller=principal.caller,
    )
