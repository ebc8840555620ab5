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
   everywhere); unless the counts already prove them, the shape limits (nesting depth, keys
   in one object, items in one array, string length: 422 ``limit_exceeded``, the message
   naming the limit) are checked a level of the parsed value at a time, with C loops, the
   strings' lengths from the quotes' positions in the bytes where no backslash is (a 1,000-car
   batch: 0.6 ms, not 1.9 ms of a Python walk over its 16,000 values).
3. The route's schema (pydantic) validates the document. A body within the limits cannot
   make it produce more than a few dozen errors, so a refusal costs microseconds, not seconds.

The limits are settings (``CARPRICE_MAX_JSON_*``, ``CARPRICE_BATCH_MAX``), kept on
``app.state.json_limits``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
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
    """A JSON body within the limits: its bytes and what they parse to.

    Read with ``shape=False`` (:func:`read_json`), the shape limits are still to check
    (``unchecked``): :func:`check_shape` does it, once the route knows that its plain reading
    (which proves them) does not apply.
    """

    body: bytes
    value: Any
    unchecked: JsonLimits | None = None
    """The limits whose shape part is still to check; None when the body is known within."""
    commas: int = 0
    colons: int = 0


async def read_json(receive: Receive, limits: JsonLimits, *, shape: bool = True) -> JsonDocument:
    """The request body from ASGI ``receive``, JSON within ``limits`` (see the module docstring).

    ``shape=False``: the shape limits (step 2) are left to :func:`check_shape`, for a route
    whose plain reading of a body proves them (the prediction routes: :mod:`serving.api.
    endpoints`); the value limit and the JSON itself are checked here all the same.

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
    value = _decode(body, limits)
    if not shape:
        return JsonDocument(body, value, limits, commas, colons)
    _check_shape(body, value, limits, commas, colons)
    return JsonDocument(body, value)


def _decode(body: bytes, limits: JsonLimits) -> Any:
    """``body`` parsed, if it is JSON (orjson's own depth limit, 1,024, is past ours).

    Raises:
        InvalidJson: empty, or not JSON.
        LimitExceeded: nested deeper than orjson parses.
    """
    if not body.strip():
        raise InvalidJson("the body is empty: send JSON")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc):
            raise _too_deep(limits) from None
        raise InvalidJson("the body is not valid JSON") from None


def check_shape(document: JsonDocument) -> None:
    """The shape limits of a document read with ``shape=False`` (nothing to do for one read
    with them); its counts of commas and colons often prove them without a look at the value.

    Raises:
        LimitExceeded: too deep, too many keys in an object or items in an array, a string
            too long.
    """
    if document.unchecked is not None:
        _check_shape(
            document.body, document.value, document.unchecked, document.commas, document.colons
        )


def _check_shape(body: bytes, value: Any, limits: JsonLimits, commas: int, colons: int) -> None:
    if (
        colons <= limits.max_keys
        and commas < limits.max_items
        and len(body) <= limits.max_string
        and body.count(b"[") + body.count(b"{") <= limits.max_depth
    ):
        return  # the counts prove every limit: no walk
    if len(body) < _WALK_MAX:
        _walk(value, limits)
    else:
        _check(value, limits, strings=not _strings_short(body, limits.max_string))


_WALK_MAX = 8192
"""Bodies shorter than this are walked value by value (:func:`_walk`: one car as /v2 tensors
in 14 us), longer ones checked a level at a time (:func:`_check`: 18 us there, but 0.6 ms
against 1.9 ms for 1,000 cars)."""


def _walk(value: Any, limits: JsonLimits) -> None:
    """The limits of a parsed body, value by value, a level at a time (no recursion limit to
    meet; one ``type()`` per value)."""
    max_keys, max_items, max_string = limits.max_keys, limits.max_items, limits.max_string
    if type(value) is str and len(value) > max_string:
        raise _too_long(limits)
    level = [value] if type(value) is dict or type(value) is list else []
    depth = 1
    while level:
        if depth > limits.max_depth:
            raise _too_deep(limits)
        below: list[Any] = []
        for node in level:
            children: Any
            if type(node) is dict:
                if len(node) > max_keys:
                    raise _too_many(len(node), max_keys, _KEYS)
                if node and max(map(len, node)) > max_string:
                    raise _too_long(limits)
                children = node.values()
            else:
                if len(node) > max_items:
                    raise _too_many(len(node), max_items, _ITEMS)
                children = node
            for child in children:
                kind = type(child)
                if kind is dict or kind is list:
                    below.append(child)
                elif kind is str and len(child) > max_string:
                    raise _too_long(limits)
        level = below
        depth += 1


def _strings_short(body: bytes, max_string: int) -> bool:
    """Whether the bytes prove that no string or key of ``body`` (valid JSON) is longer than
    ``max_string`` characters: without a backslash every ``"`` opens or closes one, so their
    positions give each one's length in bytes, never fewer than its characters."""
    if len(body) <= max_string:
        return True
    if b"\\" in body:
        return False
    quotes = np.flatnonzero(np.frombuffer(body, dtype=np.uint8) == _QUOTE)
    return bool(quotes.size == 0 or (quotes[1::2] - quotes[0::2]).max() <= max_string + 1)


_QUOTE = ord('"')


def _check(value: Any, limits: JsonLimits, *, strings: bool) -> None:
    """Check the depth, keys and items limits of a parsed body, and with ``strings`` its
    strings' lengths too; a level of the tree at a time, so that the scalars (16,000 of them in
    1,000 cars) are only looked at by C loops (``map``, ``set``), never one by one in Python."""
    if strings and type(value) is str and len(value) > limits.max_string:
        raise _too_long(limits)
    dicts: list[Any] = [value] if type(value) is dict else []
    lists: list[Any] = [value] if type(value) is list else []
    depth = 1
    while dicts or lists:
        if depth > limits.max_depth:
            raise _too_deep(limits)
        _check_sizes(dicts, limits.max_keys, _KEYS)
        _check_sizes(lists, limits.max_items, _ITEMS)
        kinds = set(map(type, _children(dicts, lists)))
        if strings:
            texts = chain.from_iterable(dicts)  # the keys
            if str in kinds:
                texts = chain(texts, (c for c in _children(dicts, lists) if type(c) is str))
            if max(map(len, texts), default=0) > limits.max_string:
                raise _too_long(limits)
        if dict in kinds or list in kinds:
            children = list(_children(dicts, lists))
            dicts = _of_type(children, kinds, dict)
            lists = _of_type(children, kinds, list)
        else:
            dicts = lists = []
        depth += 1


_KEYS = ("an object", "keys", "CARPRICE_MAX_JSON_KEYS")
_ITEMS = ("an array", "items", "CARPRICE_BATCH_MAX")


def _check_sizes(nodes: list[Any], most: int, names: tuple[str, str, str]) -> None:
    size = max(map(len, nodes), default=0)
    if size > most:
        raise _too_many(size, most, names)


def _too_many(size: int, most: int, names: tuple[str, str, str]) -> LimitExceeded:
    what, of, setting = names
    message = f"{what} has {size} {of}; at most {most} are accepted ({setting})"
    return _limit(message, f"too_many_{of}")


def _children(dicts: list[Any], lists: list[Any]) -> Iterator[Any]:
    return chain(chain.from_iterable(map(dict.values, dicts)), chain.from_iterable(lists))


def _of_type(children: list[Any], kinds: set[type], kind: type) -> list[Any]:
    if kind not in kinds:
        return []
    if len(kinds) == 1:
        return children
    return [c for c in children if type(c) is kind]


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
