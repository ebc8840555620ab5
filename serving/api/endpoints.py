"""The prediction endpoints: what each one parses and answers, and the one function that runs them.

``POST /v1/predict``, ``POST /v1/predict/batch`` and ``POST /v2/models/{name}[/versions/{v}]/infer``
differ only in how a body becomes cars and how prices become the answer: an :class:`Endpoint`
says that, and :func:`run` does the rest (:func:`parse` -> the prediction service -> the
answer's bytes). The FastAPI routes (:mod:`serving.api.routers.v1`, :mod:`~serving.api.routers.v2`)
and the fast lane (:mod:`serving.api.fastlane`) both call :func:`run`, so a prediction takes the
same path whichever of them received it.

A body becomes cars one of two ways, with the same cars for what both accept: its *plain*
reading takes a body of the shape clients send, with plainly valid values, as it is (C loops,
no validation library); any other body is *validated* in full, which names what is wrong. A
body the plain reading takes is within the JSON shape limits by its shape (depth 4 at most,
16 keys an object, strings of at most 256 characters: the least the limits' settings allow),
but for the length of its arrays, which is its number of cars; so the fast lane reads bodies
without the shape check (:func:`serving.api.bodies.read_json` with ``shape=False``) and
:func:`parse` checks the shape only for a body the plain reading does not take or with more
cars than an array may hold: /v2 tensors of one car skip a 10 us walk of their 51 containers,
a 1,000-car batch a 0.8 ms check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from starlette.responses import Response

from serving.api.bodies import JsonDocument, check_shape
from serving.api.schemas import v2
from serving.api.schemas.v1 import (
    BatchPricePrediction,
    PricePrediction,
    parse_car,
    plain_batch,
    validated_batch,
)
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
    plain: Callable[[Any], Parsed | None]
    """The body's parsed JSON -> the cars, if plainly valid (see the module docstring); None
    when it must be validated."""
    validated: Callable[[bytes, Any], Parsed]
    """(body, its parsed JSON) -> the cars; raises a ``ServingError`` naming what is wrong."""
    answer: Callable[[Prediction, str | None, str], BaseModel]
    """(prices, the protocol's request id, the server's request id) -> the response."""
    exclude_none: bool = False
    """Leave ``None`` fields out of the answer (the OIP ``id`` of a request without one)."""


def parse(endpoint: Endpoint, document: JsonDocument) -> Parsed:
    """The cars of a request's body: read plainly when it can be, else checked against the JSON
    shape limits (if not checked yet) and validated (see the module docstring).

    Raises ``LimitExceeded`` or the ``ServingError`` naming what is wrong with the cars.
    """
    parsed = endpoint.plain(document.value)
    limits = document.unchecked
    if parsed is None or (limits is not None and len(parsed[0]) > limits.max_items):
        check_shape(document)
        parsed = endpoint.validated(document.body, document.value)
    return parsed


async def run(
    endpoint: Endpoint,
    service: PredictionService,
    document: JsonDocument,
    *,
    version: str | None,
    request_id: str,
    caller: str,
) -> bytes:
    """Answer a prediction request with its JSON body (:func:`serving.api.bodies.read_json`),
    with ``version`` (None: production), for ``caller``.

    Raises the ``ServingError`` of what went wrong (the caller maps it to HTTP).
    """
    cars, protocol_id = parse(endpoint, document)
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
        endpoint, service, document, version=version, request_id=request_id, caller=caller
    )
    return Response(answer, media_type="application/json")


def _not_plain(_: Any) -> None:
    # One car: pydantic-core validates the bytes themselves (parse_car), and the counts of
    # such a small body prove the shape limits at once (serving.api.bodies).
    return None


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


def _plain_many(value: Any) -> Parsed | None:
    cars = plain_batch(value)
    return None if cars is None else (cars, None)


def _many(body: bytes, _: Any) -> Parsed:
    return validated_batch(body), None


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


V1_PREDICT = Endpoint("v1", _not_plain, _one, _priced_one)
V1_BATCH = Endpoint("v1", _plain_many, _many, _priced_many)
V2_INFER = Endpoint("v2", v2.plain, v2.validated, _inferred, exclude_none=True)
