"""The prediction endpoints: what each one parses and answers, and the one function that runs them.

``POST /v1/predict``, ``POST /v1/predict/batch`` and ``POST /v2/models/{name}[/versions/{v}]/infer``
differ only in how a body becomes cars and how prices become the answer: an :class:`Endpoint`
says that, and :func:`run` does the rest (parse -> the prediction service -> the answer's
bytes). The FastAPI routes (:mod:`serving.api.routers.v1`, :mod:`~serving.api.routers.v2`) and
the fast lane (:mod:`serving.api.fastlane`) both call :func:`run`, so a prediction takes the
same path whichever of them received it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from starlette.responses import Response

from serving.api.bodies import JsonDocument
from serving.api.schemas import v2
from serving.api.schemas.v1 import BatchPricePrediction, PricePrediction, parse_car, parse_cars
from serving.inference.cars import Cars
from serving.inference.features import Row
from serving.inference.prediction import Prediction, PredictionService

Parsed = tuple[Sequence[Row], str | None]
"""The cars of a request, and the protocol's own request id (the OIP ``id``) if it has one."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One prediction endpoint's protocol."""

    api_version: str
    """``v1`` or ``v2`` (counted and logged with every prediction)."""
    parse: Callable[[bytes, Any], Parsed]
    """(body, its parsed JSON) -> the cars; raises a ``ServingError`` naming what is wrong."""
    answer: Callable[[Prediction, str | None, str], BaseModel]
    """(prices, the protocol's request id, the server's request id) -> the response."""
    exclude_none: bool = False
    """Leave ``None`` fields out of the answer (the OIP ``id`` of a request without one)."""


async def run(
    endpoint: Endpoint,
    service: PredictionService,
    body: bytes,
    value: Any,
    *,
    version: str | None,
    request_id: str,
    caller: str,
) -> bytes:
    """Answer a prediction request whose JSON body (``body``, parsed: ``value``) is within the
    limits of :mod:`serving.api.bodies`, with ``version`` (None: production), for ``caller``.

    Raises the ``ServingError`` of what went wrong (the caller maps it to HTTP).
    """
    cars, protocol_id = endpoint.parse(body, value)
    result = await service.predict(
        cars, version, request_id=request_id, api_version=endpoint.api_version, caller=caller
    )
    answer = endpoint.answer(result, protocol_id, request_id)
    return answer.__pydantic_serializer__.to_json(answer, exclude_none=endpoint.exclude_none)


async def respond(
    endpoint: Endpoint,
    service: PredictionService,
    document: JsonDocument,
    *,
    version: str | None,
    request_id: str,
    caller: str,
) -> Response:
    """:func:`run` as a FastAPI route's answer."""
    answer = await run(
        endpoint,
        service,
        document.body,
        document.value,
        version=version,
        request_id=request_id,
        caller=caller,
    )
    return Response(answer, media_type="application/json")


def _one(body: bytes, value: Any) -> Parsed:
    return Cars.from_rows([parse_car(body)]), None


def _priced_one(result: Prediction, _: str | None, request_id: str) -> BaseModel:
    return PricePrediction(
        price=result.prices[0],
        model_name=result.model_name,
        model_version=result.model_version,
        cached=result.cached[0],
        request_id=request_id,
    )


def _many(body: bytes, value: Any) -> Parsed:
    return parse_cars(body, value), None


def _priced_many(result: Prediction, _: str | None, request_id: str) -> BaseModel:
    return BatchPricePrediction(
        prices=result.prices,
        model_name=result.model_name,
        model_version=result.model_version,
        request_id=request_id,
    )


def _inferred(result: Prediction, protocol_id: str | None, _: str) -> BaseModel:
    # The response's id is the request's (the protocol's rule), absent when it sent none: the
    # server's own request id is in the X-Request-ID header.
    return v2.response(result.prices, result.model_name, result.model_version, protocol_id)


V1_PREDICT = Endpoint("v1", _one, _priced_one)
V1_BATCH = Endpoint("v1", _many, _priced_many)
V2_INFER = Endpoint("v2", v2.parse_cars, _inferred, exclude_none=True)
