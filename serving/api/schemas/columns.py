"""Feature columns taken as they are: the check that the /v1 batch and the /v2 bodies share.

A parsed body holds the cars' values as JSON gave them. When they are plainly valid (the JSON
types the strict schemas want, numbers in range, integers whole, categories 1-64 characters
once trimmed and without NUL, at most :data:`PLAIN_STRING_MAX` as sent), :func:`plain_cars`
makes them :class:`~serving.inference.cars.Cars` a column at a time, with C loops only
(``set(map(type, ...))``, ``min``/``max``, ``map``): 1,000 cars without a Python step per car,
one car without NumPy's fixed costs. Anything else gives ``None``, and the route validates the
body in full (pydantic), which names what is wrong; what that full validation accepts it makes
into the very same cars.

:func:`category` is the one judge of a categorical value for both API versions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, ConfigDict, Field, StrictStr, TypeAdapter, ValidationError

from serving.inference.cars import Cars, Column
from serving.inference.features import FEATURES, MAX_CATEGORY_LENGTH, NUL


def _no_nul(value: str) -> str:
    if NUL in value:
        raise ValueError("must not contain a NUL character")
    return value


NoNul = AfterValidator(_no_nul)

_CATEGORY: TypeAdapter[str] = TypeAdapter(
    Annotated[StrictStr, Field(min_length=1, max_length=MAX_CATEGORY_LENGTH), NoNul],
    config=ConfigDict(str_strip_whitespace=True),
)
_KNOWN_MAX = 100_000
_known: dict[str, str] = {}
"""Category values already judged valid (the value as sent -> trimmed); at most ``_KNOWN_MAX``
of at most 64 characters as sent (a padded value is judged each time, never kept)."""


def category(value: str) -> str | None:
    """A categorical value as a row holds it (trimmed of Unicode white space, as pydantic's
    ``str_strip_whitespace`` trims), or None if it is not 1-64 characters then, or holds NUL."""
    known = _known.get(value)
    if known is None:
        try:
            known = _CATEGORY.validate_python(value)
        except ValidationError:
            return None
        if len(_known) < _KNOWN_MAX and len(value) <= MAX_CATEGORY_LENGTH:
            _known[value] = known  # bounded: at most 100,000 values of at most 64 characters
    return known


_NONE = type(None)

PLAIN_STRING_MAX = 256
"""The longest category value, as sent, that is plainly valid (a longer one is mostly padding,
and the full validation judges it): no more than the least ``CARPRICE_MAX_JSON_STRING`` may be,
so that the strings of a plain body are within the JSON limits (:mod:`serving.api.endpoints`)."""


@dataclass(frozen=True, slots=True)
class _Spec:
    """What a feature's plain values are: their JSON types, and for numbers the bounds."""

    numeric: bool
    integer: bool
    nullable: bool
    types: frozenset[type]
    low: float
    high: float


_SPECS = [
    _Spec(
        f.numeric,
        f.kind == "integer",
        f.nullable,
        frozenset((int, float) if f.numeric else (str,))
        | frozenset((_NONE,) if f.nullable else ()),
        -math.inf if f.min is None else f.min,
        math.inf if f.max is None else f.max,
    )
    for f in FEATURES
]


def plain_cars(columns: Sequence[list[Any] | None], n: int) -> Cars | None:
    """The ``n`` cars of ``columns`` (one per feature, in feature order, each of length ``n``;
    ``None``: not sent, all missing) if every value is plainly valid (see the module
    docstring), else None."""
    if n == 1:
        return _plain_car(columns)
    out: list[Column] = []
    for spec, column in zip(_SPECS, columns, strict=True):
        if column is None:
            if not spec.nullable:
                return None
            out.append([None] * n)
            continue
        types = set(map(type, column))
        if not spec.types.issuperset(types):
            return None
        if spec.numeric:
            numbers = _numbers(column, _NONE in types, spec)
            if numbers is None:
                return None
            out.append(numbers)
            continue
        trimmed = {}
        distinct = set(column)
        distinct.discard(None)
        if distinct and max(map(len, distinct)) > PLAIN_STRING_MAX:
            return None
        for v in distinct:
            canonical = category(v)
            if canonical is None:
                return None
            if canonical != v:
                trimmed[v] = canonical
        out.append([trimmed.get(v, v) for v in column] if trimmed else column)
    return Cars(out, n)


def _plain_car(columns: Sequence[list[Any] | None]) -> Cars | None:
    """:func:`plain_cars` of one car: the same checks, on the one value of each column."""
    out: list[Column] = []
    for spec, column in zip(_SPECS, columns, strict=True):
        v = None if column is None else column[0]
        kind = type(v)
        if kind not in spec.types:
            return None
        if v is None:
            out.append([None])
        elif spec.numeric:
            if not spec.low <= v <= spec.high or (
                spec.integer and kind is float and not v.is_integer()
            ):
                return None
            out.append([float(v)])
        else:
            canonical = category(v) if len(v) <= PLAIN_STRING_MAX else None
            if canonical is None:
                return None
            out.append([canonical])
    return Cars(out, 1)


NUMPY_FROM = 16
"""Columns of at least this many values are checked with NumPy, shorter ones with Python's
builtins (a NumPy call's fixed cost, ~1-3 us, is most of a one-car column's check)."""


def _numbers(column: list[Any], missing: bool, spec: _Spec) -> list[Any] | None:
    """``column`` (ints, floats and, if ``missing``, None) as floats and None, if every number
    lies in the feature's bounds and, for an integer feature, is whole; else None."""
    if len(column) >= NUMPY_FROM:
        x = np.array(column, dtype=np.float64)  # None -> NaN, which compares False
        if bool(((x < spec.low) | (x > spec.high)).any()) or (
            spec.integer and bool((np.mod(x, 1) > 0).any())
        ):
            return None
        values: list[Any] = x.tolist()
        if missing:
            return [None if v is None else y for v, y in zip(column, values, strict=True)]
        return values
    present = [v for v in column if v is not None] if missing else column
    if present and (min(present) < spec.low or max(present) > spec.high):
        return None
    values = list(map(float, present))
    if spec.integer and not all(map(float.is_integer, values)):
        return None
    if missing:
        numbers = iter(values)
        return [None if v is None else next(numbers) for v in column]
    return values
