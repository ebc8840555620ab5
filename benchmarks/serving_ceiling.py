"""The framework's ceilings for ``benchmarks/serving.py``: FastAPI answering a constant, with no
model, cache, middleware or logging.

* ``POST /constant``: the issue's constant endpoint, a plain pydantic model of the 16 fields
  (types only, no constraints) answering a constant dict;
* ``POST /v1/predict``: the API's own ``Car`` validation (bounds, strict numbers) answering a
  constant ``PricePrediction``.

Run by the benchmark as ``python -m uvicorn benchmarks.serving_ceiling:app --workers 2 --http
httptools --loop uvloop --no-access-log``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from serving.api.schemas.v1 import Car, PricePrediction

app = FastAPI(title="carprice ceiling")


class PlainCar(BaseModel):
    """The 16 features with their types and nothing else."""

    brand: str
    model: str
    fuel_type: str
    transmission: str
    body_type: str | None = None
    seller_type: str
    owner_type: str | None = None
    color: str | None = None
    year: int
    km_driven: int
    engine_cc: int | None = None
    max_power_bhp: float | None = None
    mileage_kmpl: float | None = None
    seats: int | None = None
    torque_nm: float | None = None
    doors: int


_CONSTANT = {"price": 10_000.0, "model_name": "constant", "model_version": "0", "cached": False}


@app.post("/constant")
async def constant(car: PlainCar) -> dict[str, Any]:
    """A constant dict for any car."""
    return _CONSTANT


@app.post("/v1/predict")
async def predict(car: Car) -> PricePrediction:
    """A constant price for any valid car."""
    return PricePrediction(
        price=10_000.0, model_name="constant", model_version="0", cached=False, request_id="-"
    )


@app.get("/v2/health/ready")
async def ready() -> dict[str, bool]:
    """Always ready."""
    return {"ready": True}
