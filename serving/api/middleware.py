"""Pure ASGI middleware: request context + access log, and the request body size limit.

* :class:`RequestContextMiddleware` gives every request an id (the client's ``X-Request-ID``
  when it is a sane token, else a new one), returns it in ``X-Request-ID``, writes one JSON
  access-log line per request (method, path, status, latency, model version), and turns an
  unexpected exception into a logged 500 with the error body shape.
* :class:`BodySizeLimitMiddleware` answers 413 to a body over its route's limit
  (:func:`serving.api.bodies.max_body_of`): at once when ``Content-Length`` says so, else as
  soon as the bytes received pass it (chunked uploads, or a client that sends no length),
  without reading the rest. A body that may be larger than ``CARPRICE_MAX_BODY_BYTES`` (so
  declared, or of no declared length) has its connection closed: the rest is never received
  just to be thrown away. One declared within it (say 100 KB to the 16 KB ``/v1/predict``) is
  drained after the answer instead: closing a socket the client is still writing to resets
  it, and the client would see a connection reset rather than the 413 naming the limit; the
  drain is bounded by the declared length, and the answer is held
  (:mod:`serving.api.refusals`), so that a client cannot loop on it. And 415 at once to a
  ``Content-Encoding`` (the server decodes none: a gzip body would otherwise be read as
  JSON). Both look at headers only, so they come before authentication and cost nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.api.errors import error_response
from serving.errors import short_text
from serving.monitoring import request_context

log = logging.getLogger(__name__)
access_log = logging.getLogger("serving.access_log")

REQUEST_ID_HEADER = "X-Request-ID"
_CLOSE = {"Connection": "close"}
"""On a 413 for a body that may pass ``CARPRICE_MAX_BODY_BYTES``: uvicorn then closes the
connection instead of reading the rest. (A body refused within that is drained: on a keep-alive
connection that costs the server less CPU than the client's next connection, as measured.)"""


class RequestContextMiddleware:
    """Request id in and out, JSON access log, last-resort 500 in the error shape."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = Headers(scope=scope)
        ctx = request_context.RequestContext(
            request_context.request_id_from(headers.get(REQUEST_ID_HEADER))
        )
        token = request_context.activate(ctx)
        status = 0
        sent_bytes = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status, sent_bytes
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = ctx.request_id
            elif message["type"] == "http.response.body":
                sent_bytes += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if status == 0:
                response = error_response(
                    500,
                    "internal_error",
                    "internal server error",
                    headers={REQUEST_ID_HEADER: ctx.request_id},
                )
                status = 500
                await response(scope, receive, send)
        finally:
            log_access(scope, ctx, status, started, sent_bytes)
            request_context.deactivate(token)


def log_access(
    scope: Scope, ctx: request_context.RequestContext, status: int, started: float, sent: int
) -> None:
    """Write the access-log line of one finished request (also used by the fast lane)."""
    client = scope.get("client")
    access_log.info(
        "%s %s %s",
        scope["method"],
        scope["path"],
        status,
        extra={
            "fields": {
                "request_id": ctx.request_id,
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                "model_version": ctx.model_version,
                "bytes": sent,
                "client": f"{client[0]}:{client[1]}" if client else None,
            }
        },
    )


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when the body passes the limit.

    An ``HTTPException`` so that FastAPI's body parsing lets it through to the error handlers
    (it turns other exceptions into a 400).
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large_message(limit), headers=dict(_CLOSE))


class BodySizeLimitMiddleware:
    """413 for request bodies over ``limit(path)`` bytes, with or without ``Content-Length``
    (closing the connection when the body may be larger than ``close_over`` bytes); 415 for an
    encoded body."""

    def __init__(self, app: ASGIApp, limit: Callable[[str], int], close_over: int) -> None:
        self.app = app
        self.limit = limit
        self.close_over = close_over

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope["path"])
        headers = Headers(scope=scope)
        encoding = headers.get("content-encoding")
        if encoding is not None and encoding.strip().lower() not in ("", "identity"):
            await _unsupported_encoding(encoding)(scope, receive, send)
            return
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(limit, close=int(declared) > self.close_over)(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            # Read outside FastAPI's handlers (e.g. by another middleware): answer here.
            if started:
                raise
            await _too_large(limit, close=True)(scope, receive, send)


def too_large_message(limit: int) -> str:
    """The message of a 413 for a body over the byte limit ``limit``."""
    return (
        f"the body is larger than this route's limit of {limit} bytes "
        "(CARPRICE_MAX_BODY_BYTES for lists of cars, else CARPRICE_MAX_SMALL_BODY_BYTES)"
    )


def _unsupported_encoding(encoding: str) -> ASGIApp:
    return error_response(
        415,
        "unsupported_media_type",
        f"Content-Encoding {short_text(encoding)[:40]!r} is not supported: send the body "
        "uncompressed",
    )


def _too_large(limit: int, *, close: bool) -> ASGIApp:
    return error_response(
        413,
        "payload_too_large",
        too_large_message(limit),
        headers=dict(_CLOSE) if close else None,
    )
