"""The API's feature schema: the 16 columns of a car, their kinds, bounds and nullability.

This is serving's statement of the data contract (serving never imports ``pipelines``): the /v1
and /v2 schemas validate against it, and a model is served only when its logged signature
agrees with it (:func:`serving.inference.model.check_signature`). A test keeps it equal to
``pipelines/contract.py``.

A validated car travels as a :data:`Row`: a dict with every feature name, categoricals as
``str | None`` and numbers as ``float | None`` (``None`` = missing), so the same car is the same
row (and the same cache key) whichever API version it came through.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

Row = dict[str, str | float | None]
"""One car: every feature name -> ``str``/``float`` value, ``None`` where missing."""

MAX_CATEGORY_LENGTH = 64
"""Longest accepted categorical value (the longest in the catalogue is ~20 characters)."""
NUL = "\x00"
"""Never accepted in a categorical value: no car's brand holds it, and the prediction log's
PostgreSQL text columns cannot store it."""


@dataclass(frozen=True, slots=True)
class Feature:
    """One input column: its kind, whether it may be missing, and its allowed range."""

    name: str
    kind: Literal["categorical", "integer", "float"]
    nullable: bool
    min: float | None = None
    max: float | None = None
    description: str = ""

    @property
    def numeric(self) -> bool:
        return self.kind != "categorical"


FEATURES: tuple[Feature, ...] = (
    Feature("brand", "categorical", False, description="Make, e.g. `Toyota`."),
    Feature("model", "categorical", False, description="Model line, e.g. `Corolla`."),
    Feature("fuel_type", "categorical", False, description="`Petrol`, `Diesel`, `Hybrid`, `LPG`."),
    Feature("transmission", "categorical", False, description="`Manual` or `Automatic`."),
    Feature("body_type", "categorical", True, description="`Hatchback`, `SUV`, `Sedan`, ..."),
    Feature("seller_type", "categorical", False, description="`Dealer`, `Private`, ..."),
    Feature("owner_type", "categorical", True, description="`First`, `Second`, ..."),
    Feature("color", "categorical", True, description="Exterior colour."),
    Feature("year", "integer", False, 1990, 2026, "Year of first registration."),
    Feature("km_driven", "integer", False, 0, 1_000_000, "Odometer reading (km)."),
    Feature("engine_cc", "integer", True, 600, 8_000, "Engine displacement (cc)."),
    Feature("max_power_bhp", "float", True, 30, 1_000, "Maximum power (bhp)."),
    Feature("mileage_kmpl", "float", True, 2, 50, "Fuel economy (km per litre)."),
    Feature("seats", "integer", True, 2, 9, "Number of seats."),
    Feature("torque_nm", "float", True, 40, 1_500, "Maximum torque (Nm)."),
    Feature("doors", "integer", False, 2, 5, "Number of doors."),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}


_KINDS: tuple[tuple[str, bool], ...] = tuple((f.name, f.numeric) for f in FEATURES)


def make_row(values: Mapping[str, Any]) -> Row:
    """The canonical row of already-validated ``values`` (missing keys become ``None``)."""
    get = values.get
    row: Row = {}
    for name, numeric in _KINDS:
        v = get(name)
        row[name] = None if v is None else float(v) if numeric else str(v)
    return row


row_values: Callable[[Row], tuple[str | float | None, ...]] = operator.itemgetter(*FEATURE_NAMES)
"""The row's values in feature order, as a tuple (a cheap, exact, hashable identity)."""


def row_digest(row: Row) -> str:
    """SHA-256 (hex) of the row's values in feature order, as JSON (:func:`values_bytes`)."""
    return values_digest(row_values(row))


def values_digest(values: tuple[str | float | None, ...]) -> str:
    """:func:`row_digest` of a row's :func:`row_values`."""
    return hashlib.sha256(values_bytes(values)).hexdigest()


def values_bytes(values: tuple[str | float | None, ...]) -> bytes:
    """The exact, unambiguous bytes of a row's values: a JSON array written by orjson (strings
    escaped, floats in their shortest round-trip form, ``null`` for missing).

    4x cheaper than ``repr`` (the float formatting dominated: ~5 ms of a 1,000-car batch's
    digests). A value orjson refuses (a lone surrogate, which no parsed JSON body holds) is
    written as its ``repr`` instead, which never reads as a JSON array.
    """
    try:
        return orjson.dumps(values)
    except TypeError:
        return repr(values).encode("utf-8", "surrogatepass")
