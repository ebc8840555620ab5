"""The data contract: the one declaration of columns, types, ranges and categories.

Validation derives its Great Expectations suite from it, training logs it next to the model
(``data_contract.json``) and serving reads that artifact, so every part of the project speaks
one schema and a served model always carries its own contract.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, Field

from pipelines.catalog import (
    BODY_TYPES,
    CATALOG,
    COLORS,
    FUEL_TYPES,
    OWNER_TYPES,
    SELLER_TYPES,
    TRANSMISSIONS,
)

TARGET = "selling_price"
CATEGORICAL = (
    "brand",
    "model",
    "fuel_type",
    "transmission",
    "body_type",
    "seller_type",
    "owner_type",
    "color",
)
NUMERICAL = (
    "year",
    "km_driven",
    "engine_cc",
    "max_power_bhp",
    "mileage_kmpl",
    "seats",
    "torque_nm",
    "doors",
)
FEATURES = CATEGORICAL + NUMERICAL


class ColumnSpec(BaseModel):
    """What one column may hold."""

    name: str
    kind: Literal["categorical", "integer", "float"]
    nullable: bool = Field(description="may the column have missing values at all")
    max_null_fraction: float = Field(0.0, ge=0, le=1)
    min: float | None = None
    max: float | None = None
    strict_min: bool = False
    categories: list[str] | None = None


class DataContract(BaseModel):
    """Columns of the raw listings and the limits a valid data set keeps to."""

    version: int = 1
    target: str = TARGET
    columns: list[ColumnSpec]
    min_rows: int
    max_unknown_category_rate: float = Field(ge=0, le=1)

    @property
    def feature_columns(self) -> list[ColumnSpec]:
        return [c for c in self.columns if c.name != self.target]

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), indent=2, sort_keys=False)


def _cat(name: str, categories: list[str], null: float = 0.0) -> ColumnSpec:
    return ColumnSpec(
        name=name,
        kind="categorical",
        nullable=null > 0,
        max_null_fraction=null,
        categories=sorted(categories),
    )


def _num(
    name: str,
    kind: Literal["integer", "float"],
    lo: float,
    hi: float,
    null: float = 0.0,
) -> ColumnSpec:
    return ColumnSpec(
        name=name, kind=kind, nullable=null > 0, max_null_fraction=null, min=lo, max=hi
    )


# Nullable columns may miss up to 15% (the raw data misses 2-6%); the others never.
_NULLABLE = 0.15


def build_contract(min_rows: int = 1000, max_unknown_category_rate: float = 0.01) -> DataContract:
    """Return the contract, with the two dataset-level limits taken from params.

    Args:
        min_rows: the fewest rows a training set may have.
        max_unknown_category_rate: the largest share of a categorical column that may hold a
            value outside its allowed set before the data set is refused.
    """
    models = sorted({m.name for ms in CATALOG.values() for m in ms.models})
    columns = [
        _cat("brand", list(CATALOG)),
        _cat("model", models),
        _cat("fuel_type", list(FUEL_TYPES)),
        _cat("transmission", list(TRANSMISSIONS)),
        _cat("body_type", list(BODY_TYPES), _NULLABLE),
        _cat("seller_type", list(SELLER_TYPES)),
        _cat("owner_type", list(OWNER_TYPES), _NULLABLE),
        _cat("color", list(COLORS), _NULLABLE),
        _num("year", "integer", 1990, 2026),
        _num("km_driven", "integer", 0, 1_000_000),
        _num("engine_cc", "integer", 600, 8_000, _NULLABLE),
        _num("max_power_bhp", "float", 30, 1_000, _NULLABLE),
        _num("mileage_kmpl", "float", 2, 50, _NULLABLE),
        _num("seats", "integer", 2, 9, _NULLABLE),
        _num("torque_nm", "float", 40, 1_500, _NULLABLE),
        _num("doors", "integer", 2, 5),
        ColumnSpec(
            name=TARGET, kind="float", nullable=False, min=0, max=2_000_000, strict_min=True
        ),
    ]
    return DataContract(
        columns=columns,
        min_rows=min_rows,
        max_unknown_category_rate=max_unknown_category_rate,
    )
