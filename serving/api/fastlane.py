"""The fast lane: ``POST /v1/predict`` and ``POST /v1/predict/batch`` answered in one ASGI step.

A cached one-car prediction needs microseconds of work: check the key, look the price up, write
the answer. Through the full stack it cost ~1 ms of CPU, most of it machinery (FastAPI's
dependency solving, route matching over every route, nine middleware layers each wrapping
``send``, the instrumentator matching the route a second time), which capped a cached
``/v1/predict`` at 30 % of a bare FastAPI endpoint. This layer sits in front of that whole stack
(:class:`serving.main.CarpriceAPI`) and serves the common request itself, running the same
checks as the stack (the same functions) in the same order:

request id -> credentials (``X-API-Key`` or a bearer token: :func:`~serving.api.security.admit`,
401) -> rate limit (429) -> the predict role (403) -> body within the JSON limits
(:func:`~serving.api.bodies.read_json`, 413/422; a client gone mid-body is logged as 499; the
shape limits checked by :func:`~serving.api.endpoints.parse` unless the body's plain reading
proves them) -> validation (:func:`~serving.api.endpoints.parse`, 422) ->
:class:`~serving.inference.prediction.PredictionService` -> the same response body and headers
(a refusal held first, as the stack holds it: :mod:`serving.api.refusals`) -> the same HTTP
metrics and access-log line. Nothing about the body is looked at before the
caller has proven who it is and been counted.

A request whose *headers* it is not sure of goes to the FastAPI app untouched, before anything
is read or counted: another path or method, no credentials header, a CORS request
(``Origin``), a non-JSON ``Content-Type``, a ``Content-Encoding``, a body without
``Content-Length`` or over the route's limit, a repeated credential or body header, dependency
overrides (tests), or ``CARPRICE_FAST_LANE=false``. Once it has taken a request it answers it,
errors included, with the stack's own error mapping.

``tests/serving/api/test_fastlane.py`` sends the same requests through both and compares.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.security.utils import get_authorization_scheme_param
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.access.principals import AccessError, Role
from serving.access.ratelimit import RateLimited, RateState
from serving.api.bodies import JsonLimits, read_json
from serving.api.deps import check_model_name
from serving.api.endpoints import V1_BATCH, V1_PREDICT, V2_INFER, Endpoint, run
from serving.api.errors import error_response, serving_error_response
from serving.api.middleware import REQUEST_ID_HEADER, log_access
from serving.api.refusals import hold
from serving.api.security import AccessControl, admit, check_role, handle_access_error
from serving.errors import ServingError
from serving.inference.prediction import PredictionService
from serving.monitoring import request_context
from serving.monitoring.metrics import FAST_LANE, observe_http

log = logging.getLogger(__name__)

_SERVED = FAST_LANE.labels("served")
_HANDED_OVER = FAST_LANE.labels("handed_over")
_JSON = (b"application/json", b"")  # an absent Content-Type is taken as JSON, as the stack does
_ONCE = frozenset((b"content-type", b"content-length", b"x-api-key", b"authorization"))
# The binary tensor extension: the stack refuses it (400) after the role check.
_NOT_TAKEN = (
    b"origin",
    b"transfer-encoding",
    b"content-encoding",
    b"inference-header-content-length",
)


@dataclass(frozen=True, slots=True)
class _Route:
    endpoint: Endpoint
    model_name: str | None = None  # of a /v2 path, checked against the served model
    model_version: str | None = None  # of a /v2/.../versions/{v} path


_V1: dict[str, _Route] = {
    "/v1/predict": _Route(V1_PREDICT),
    "/v1/predict/batch": _Route(V1_BATCH),
}
# Starlette's {param} matches [^/]+ of the decoded path, as here.
_V2_INFER = re.compile(r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer")


def route_of(path: str) -> _Route | None:
    """The prediction endpoint of ``path`` (each is also a FastAPI route, which documents it)."""
    route = _V1.get(path)
    if route is None and path.startswith("/v2/models/"):
        match = _V2_INFER.fullmatch(path)
        if match is not None:
            route = _Route(V2_INFER, match["name"], match["version"])
    return route


@dataclass(slots=True)
class _Headers:
    content_type: bytes = b""
    content_length: int | None = None
    api_key: str | None = None
    authorization: str | None = None
    request_id: str | None = None
    takeable: bool = True


def _scan(raw: Sequence[tuple[bytes, bytes]]) -> _Headers:
    """The request headers the lane reads, in one pass; a header it does not handle (CORS,
    chunked bodies, a repeated credential or body header) marks the request as not takeable."""
    out = _Headers()
    seen: set[bytes] = set()
    for name, value in raw:
        if name in _ONCE:
            if name in seen:
                out.takeable = False
            seen.add(name)
        if name == b"content-type":
            out.content_type = value.split(b";", 1)[0].strip().lower()
        elif name == b"content-length":
            out.content_length = int(value) if value.isdigit() else None
        elif name == b"x-api-key":
            out.api_key = value.decode("latin-1") or None  # empty = absent, as in FastAPI
        elif name == b"authorization":
            out.authorization = value.decode("latin-1")
        elif name == b"x-request-id":
            out.request_id = out.request_id or value.decode("latin-1")
        elif name in _NOT_TAKEN:
            out.takeable = False
    return out


class FastLane:
    """ASGI middleware serving the common /v1 prediction request (see the module docstring).

    ``fastapi_app`` is the app it fronts: its state (filled in by the lifespan) holds the
    prediction service and access control, and while it has dependency overrides (tests)
    every request goes down the full stack. ``body_limit`` gives a path's body size limit
    (:func:`serving.api.bodies.max_body_of`).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        fastapi_app: FastAPI,
        enabled: bool,
        body_limit: Callable[[str], int],
    ) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.enabled = enabled
        self.body_limit = body_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = route_of(scope["path"]) if scope["type"] == "http" else None
        if (
            route is None
            or not self.enabled
            or scope["method"] != "POST"
            or self.fastapi_app.dependency_overrides
        ):
            await self.app(scope, receive, send)
            return
        if not await self._take(scope, receive, send, route):
            _HANDED_OVER.inc()

    async def _take(self, scope: Scope, receive: Receive, send: Send, route: _Route) -> bool:
        """Answer the request, or hand it to the stack (untouched) and return False."""
        started = time.perf_counter()
        headers = _scan(scope["headers"])
        declared = headers.content_length
        state = self.fastapi_app.state
        access: AccessControl | None = getattr(state, "access", None)
        service: PredictionService | None = getattr(state, "predictions", None)
        if (
            not headers.takeable
            or headers.content_type not in _JSON
            or declared is None
            or declared > self.body_limit(scope["path"])
            or (headers.api_key is None and headers.authorization is None)
            or access is None  # not started: the stack says why
            or service is None
        ):
            await self.app(scope, receive, send)
            return False
        _SERVED.inc()
        limits: JsonLimits = state.json_limits
        ctx = request_context.RequestContext(request_context.request_id_from(headers.request_id))
        token = request_context.activate(ctx)
        status, sent = 500, 0
        try:
            response = await self._respond(
                scope, receive, route, access, service, limits, headers, ctx
            )
            status = response.status_code
            await hold(response, self.fastapi_app)
            sent = await _send(send, response, ctx.request_id)
        finally:
            duration = time.perf_counter() - started
            group = f"{str(status)[0]}xx"
            observe_http("POST", scope["path"], group, declared, sent, duration)
            log_access(scope, ctx, status, started, sent)
            request_context.deactivate(token)
        return True

    async def _respond(
        self,
        scope: Scope,
        receive: Receive,
        route: _Route,
        access: AccessControl,
        service: PredictionService,
        limits: JsonLimits,
        headers: _Headers,
        ctx: request_context.RequestContext,
    ) -> Response:
        """The stack's checks in the stack's order (see the module docstring)."""
        rate: RateState | None = None
        response: Response
        try:
            token = None
            if headers.api_key is None and headers.authorization is not None:
                scheme, param = get_authorization_scheme_param(headers.authorization)
                token = param if scheme.lower() == "bearer" else None
            principal, rate = await admit(access, token, headers.api_key, presented=True)
            if not rate.allowed:
                raise RateLimited(rate)
            check_role(principal, Role.PREDICT)
            if route.model_name is not None:
                check_model_name(route.model_name, self.fastapi_app.state.settings)
            document = await read_json(receive, limits, shape=False)  # see endpoints.parse
            answer = await run(
                route.endpoint,
                service,
                document,
                version=route.model_version,
                request_id=ctx.request_id,
                caller=principal.caller,
            )
            response = Response(answer, media_type="application/json")
        except AccessError as exc:
            response = await handle_access_error(Request(scope), exc)
        except ServingError as exc:
            response = serving_error_response(exc)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            return error_response(500, "internal_error", "internal server error")
        if rate is not None:
            for name, value in rate.headers().items():
                if name not in response.headers:
                    response.headers.append(name, value)
        return response


async def _send(send: Send, response: Response, request_id: str) -> int:
    """Send ``response`` with the request id header; returns the body's length."""
    response.headers[REQUEST_ID_HEADER] = request_id
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": response.body})
    return len(response.body)
