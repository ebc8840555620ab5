"""/v1: typed JSON. One car or a list of cars in, prices out; the registered model versions."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from serving.access.principals import Role
from serving.api.deps import (
    FeedbackServiceDep,
    ModelsDep,
    PredictionServiceDep,
    RequestIdDep,
    require_json,
)
from serving.api.schemas.errors import ERROR_RESPONSES, FEEDBACK_RESPONSES
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
# serving.api.routers.auth.
router = APIRouter(
    prefix="/v1",
    tags=["v1"],
    strict_content_type=False,
    dependencies=[Depends(require_role(Role.PREDICT))],
)


@router.post(
    "/predict",
    responses=ERROR_RESPONSES,
    dependencies=[Depends(require_json)],
)
async def predict(
    car: Car, service: PredictionServiceDep, request_id: RequestIdDep, principal: PredictPrincipal
) -> PricePrediction:
    """Predict the price of one car with the production model."""
    result = await service.predict(
        [car.to_row()], request_id=request_id, api_version="v1", caller=principal.caller
    )
    return PricePrediction(
        price=result.prices[0],
        model_name=result.model_name,
        model_version=result.model_version,
        cached=result.cached[0],
        request_id=request_id,
    )


@router.post(
    "/predict/batch",
    responses=ERROR_RESPONSES,
    dependencies=[Depends(require_json)],
)
async def predict_batch(
    cars: list[Car],
    service: PredictionServiceDep,
    request_id: RequestIdDep,
    principal: PredictPrincipal,
) -> BatchPricePrediction:
    """Predict the prices of a list of cars (at most `CARPRICE_BATCH_MAX`) in one call."""
    result = await service.predict(
        [car.to_row() for car in cars],
        request_id=request_id,
        api_version="v1",
        caller=principal.caller,
    )
    return BatchPricePrediction(
        prices=result.prices,
        model_name=result.model_name,
        model_version=result.model_version,
        request_id=request_id,
    )


@router.post(
    "/feedback",
    responses=FEEDBACK_RESPONSES,
    dependencies=[Depends(require_json)],
)
async def feedback(
    reports: FeedbackReport | list[FeedbackReport], service: FeedbackServiceDep
) -> FeedbackRecorded:
    """Report what priced cars really sold for: one report or a list (at most
    `CARPRICE_BATCH_MAX`), each naming a prediction's `request_id` and `row` (default 0).

    A request is recorded whole or not at all: an unknown request id or row is a 404 naming it;
    a car whose price was already reported is a 409 (the first report stays). A prediction is
    in the log within about `CARPRICE_PREDICTION_LOG_FLUSH_INTERVAL` seconds of its answer.
    """
    items = reports if isinstance(reports, list) else [reports]
    recorded = await service.report([item.to_feedback() for item in items])
    return FeedbackRecorded(recorded=recorded)


@router.get("/models", responses={503: ERROR_RESPONSES[503]})
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
