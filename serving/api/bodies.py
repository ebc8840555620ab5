"""Request bodies: reading them, and the limits a JSON body must meet before anything parses it.

Every JSON body (``/v1``, ``/v2``, ``/v1/admin``) takes the same steps, in the fast lane and in
the FastAPI stack alike, and only *after* its caller was authenticated and counted against the
rate limit (so a caller who has not proven who it is costs a header check, never a read):

1. :func:`read_json` reads it from ASGI ``receive``, counting each chunk's ``,`` and ``:`` as it
   arrives (C speed): a body holding more than ``max_values`` values is a 413 *as soon as the
   part received proves it*, and nothing parses the rest (its answer is held:
   :mod:`serving.api.refusals`). The byte limit of the route (:func:`max_body_of`, with or
   without ``Content-Length``) is enforced before that by the lane's header check and
   :class:`~serving.api.middleware.BodySizeLimitMiddleware`; a client that goes away mid-body
   raises :class:`~serving.errors.ClientDisconnected` (logged as 499, never a server error).
2. Then orjson, a C parser, refuses what is not JSON (bad UTF-8, ``NaN``,
   numbers beyond a double, nesting deeper than 1,024: one code, ``invalid_json``, 422,
   everywhere); unless the counts already prove it, the value is walked once for the shape
   limits (nesting depth, keys in one object, items in one array, string length: 422
   ``limit_exceeded``, the message naming the limit).
3. The route's schema (pydantic) validates the document. A body within the limits cannot
   make it produce more than a few dozen errors, so a refusal costs microseconds, not seconds.

The limits are settings (``CARPRICE_MAX_JSON_*``, ``CARPRICE_BATCH_MAX``), kept on
``app.state.json_limits``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from starlette.types import Receive

from serving.errors import ClientDisconnected, InvalidJson, LimitExceeded, PayloadTooLarge
from serving.settings import Settings

_LIST_ROUTES = frozenset(("/v1/predict/batch", "/v1/feedback"))


def max_body_of(path: str, *, small: int, large: int) -> int:
    """The byte limit of a request body to ``path``: ``large`` (``CARPRICE_MAX_BODY_BYTES``)
    for the routes taking lists of cars (``/v1/predict/batch``, ``/v1/feedback``, ``/v2``
    infer), ``small`` (``CARPRICE_MAX_SMALL_BODY_BYTES``, never more than ``large``) for every
    other: one car, a login form, an admin request. Decided on the path alone, so that a body
    over it is refused on its ``Content-Length`` before authentication and before a byte of it
    is read."""
    if path in _LIST_ROUTES or path.startswith("/v2/"):
        return large
    return min(small, large)


MIN_ITEMS_LIMIT = 64
"""Arrays may always hold this many items (the /v2 ``inputs`` list), whatever ``batch_max``."""


@dataclass(frozen=True, slots=True)
class JsonLimits:
    """The shape a JSON body may have (see the module docstring)."""

    max_values: int
    """Values and keys in the whole body (counted as its commas and colons, plus one)."""
    max_depth: int
    """Nesting depth: ``{}`` is 1, ``[{}]`` is 2."""
    max_keys: int
    """Keys in one object."""
    max_items: int
    """Items in one array (``batch_max``: no array of a valid request holds more)."""
    max_string: int
    """Characters in one string or key."""

    @classmethod
    def from_settings(cls, settings: Settings) -> JsonLimits:
        return cls(
            max_values=settings.max_json_values,
            max_depth=settings.max_json_depth,
            max_keys=settings.max_json_keys,
            max_items=max(settings.batch_max, MIN_ITEMS_LIMIT),
            max_string=settings.max_json_string,
        )


@dataclass(frozen=True, slots=True)
class JsonDocument:
    """A JSON body within the limits: its bytes and what they parse to."""

    body: bytes
    value: Any


async def read_json(receive: Receive, limits: JsonLimits) -> JsonDocument:
    """The request body from ASGI ``receive``, JSON within ``limits`` (see the module docstring).

    Raises:
        ClientDisconnected: the client went away before the whole body came.
        PayloadTooLarge: more values than ``max_values`` (decided on the bytes received so far,
            before the rest is read or anything parses).
        InvalidJson: empty, or not JSON.
        LimitExceeded: too deep, too many keys in an object or items in an array, a string
            too long.
    """
    chunks: list[bytes] = []
    commas = colons = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnected("the client disconnected before sending the whole body")
        chunk: bytes = message.get("body", b"")
        if chunk:
            commas += chunk.count(b",")
            colons += chunk.count(b":")
            if commas + colons + 1 > limits.max_values:
                raise PayloadTooLarge(
                    f"the body holds more than {limits.max_values} values and keys "
                    "(CARPRICE_MAX_JSON_VALUES)"
                )
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    return JsonDocument(body, _parse(body, limits, commas, colons))


def _parse(body: bytes, limits: JsonLimits, commas: int, colons: int) -> Any:
    """``body`` parsed, if it is JSON within ``limits``; ``commas`` and ``colons``: its counts
    of those bytes, taken while reading it (``max_values`` is checked).

    Raises:
        InvalidJson: empty, or not JSON.
        LimitExceeded: too deep, too many keys in an object or items in an array, a string
            too long.
    """
    if not body.strip():
        raise InvalidJson("the body is empty: send JSON")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc):  # orjson's own limit (1,024) is past ours
            raise _too_deep(limits) from None
        raise InvalidJson("the body is not valid JSON") from None
    if (
        colons <= limits.max_keys
        and commas < limits.max_items
        and len(body) <= limits.max_string
        and body.count(b"[") + body.count(b"{") <= limits.max_depth
    ):
        return value  # the counts prove every limit: no walk
    _walk(value, limits)
    return value


def _walk(value: Any, limits: JsonLimits) -> None:
    # Iterative (no recursion limit to meet), containers only pushed: one type() per value.
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children: Any
        if type(node) is dict:
            if depth > limits.max_depth:
                raise _too_deep(limits)
            if len(node) > limits.max_keys:
                raise _limit(
                    f"an object has {len(node)} keys; at most {limits.max_keys} are accepted "
                    "(CARPRICE_MAX_JSON_KEYS)",
                    "too_many_keys",
                )
            if node and max(map(len, node)) > limits.max_string:
                raise _too_long(limits)
            children = node.values()
        elif type(node) is list:
            if depth > limits.max_depth:
                raise _too_deep(limits)
            if len(node) > limits.max_items:
                raise _limit(
                    f"an array has {len(node)} items; at most {limits.max_items} are accepted "
                    "(CARPRICE_BATCH_MAX)",
                    "too_many_items",
                )
            children = node
        else:
            continue
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                stack.append((child, depth + 1))
            elif kind is str and len(child) > limits.max_string:
                raise _too_long(limits)


def _limit(message: str, kind: str) -> LimitExceeded:
    return LimitExceeded(message, [{"loc": "body", "msg": message, "type": kind}])


def _too_deep(limits: JsonLimits) -> LimitExceeded:
    return _limit(
        f"the body is nested deeper than {limits.max_depth} levels (CARPRICE_MAX_JSON_DEPTH)",
        "too_deep",
    )


def _too_long(limits: JsonLimits) -> LimitExceeded:
    return _limit(
        f"a string is longer than {limits.max_string} characters (CARPRICE_MAX_JSON_STRING)",
        "string_too_long",
    )
