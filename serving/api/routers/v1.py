"""/v1: typed JSON. One car or a list of cars in, prices out; the registered model versions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from pydantic import Field

from serving.access.principals import Role
from serving.api.deps import (
    FeedbackServiceDep,
    JsonDocumentDep,
    ModelsDep,
    PredictionServiceDep,
    RequestIdDep,
    json_model,
    require_json,
)
from serving.api.endpoints import V1_BATCH, V1_PREDICT, respond
from serving.api.openapi import json_body
from serving.api.schemas.errors import BODY, FEEDBACK_RESPONSES, PROTECTED, error_responses
from serving.api.schemas.v1 import (
    BatchPricePrediction,
    Car,
    FeedbackRecorded,
    FeedbackReport,
    ModelList,
    ModelVersionInfo,
    PricePrediction,
)
from serving.api.security import PredictPrincipal, require_role

# Every /v1 route here needs the predict role (admins have it too); login is in
# serving.api.routers.auth. The router's dependency runs first: a body is read and parsed only
# for an authenticated caller within its rate limit.
router = APIRouter(
    prefix="/v1",
    tags=["v1"],
    dependencies=[Depends(require_role(Role.PREDICT))],
    responses=error_responses(*PROTECTED),
)
_PREDICT_ERRORS = error_responses(*BODY, 503)
_Reports = FeedbackReport | Annotated[list[FeedbackReport], Field(min_length=1)]
ReportsBody = Annotated[_Reports, Depends(json_model(_Reports))]


@router.post(
    "/predict",
    responses=_PREDICT_ERRORS,
    dependencies=[Depends(require_json)],
    openapi_extra=json_body(Car),
    response_model=PricePrediction,
)
async def predict(
    document: JsonDocumentDep,
    service: PredictionServiceDep,
    request_id: RequestIdDep,
    principal: PredictPrincipal,
) -> Response:
    """Predict the price of one car with the production model."""
    return await respond(
        V1_PREDICT, service, document, version=None, request_id=request_id, caller=principal.caller
    )


@router.post(
    "/predict/batch",
    responses=_PREDICT_ERRORS,
    dependencies=[Depends(require_json)],
    openapi_extra=json_body(list[Car], batch=True),
    response_model=BatchPricePrediction,
)
async def predict_batch(
    document: JsonDocumentDep,
    service: PredictionServiceDep,
    request_id: RequestIdDep,
    principal: PredictPrincipal,
) -> Response:
    """Predict the prices of a list of cars (at most `CARPRICE_BATCH_MAX`) in one call."""
    return await respond(
        V1_BATCH, service, document, version=None, request_id=request_id, caller=principal.caller
    )


@router.post(
    "/feedback",
    responses=FEEDBACK_RESPONSES | error_responses(415),
    dependencies=[Depends(require_json)],
    openapi_extra=json_body(_Reports, batch=True),
)
async def feedback(reports: ReportsBody, service: FeedbackServiceDep) -> FeedbackRecorded:
    """Report what priced cars really sold for: one report or a list (at most
    `CARPRICE_BATCH_MAX`), each naming a prediction's `request_id` and `row` (default 0).

    A request is recorded whole or not at all: an unknown request id or row is a 404 naming it;
    a car whose price was already reported is a 409 (the first report stays). A prediction is
    in the log within about `CARPRICE_PREDICTION_LOG_FLUSH_INTERVAL` seconds of its answer.
    """
    items = reports if isinstance(reports, list) else [reports]
    recorded = await service.report([item.to_feedback() for item in items])
    return FeedbackRecorded(recorded=recorded)


@router.get("/models", responses=error_responses(503))
async def list_models(models: ModelsDep) -> ModelList:
    """The registered versions of the model, with their aliases and training metrics."""
    versions = await models.list_versions()
    serving = models.production.version if models.production else None
    return ModelList(
        name=models.name,
        alias=models.alias,
        serving_version=serving,
        versions=[ModelVersionInfo.of(v, serving) for v in versions],
    )
