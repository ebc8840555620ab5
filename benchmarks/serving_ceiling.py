"""The framework's ceiling for ``benchmarks/serving.py``: FastAPI validating the same ``Car``
body and answering a constant, with no model, cache, middleware or logging.

Run by the benchmark as ``python -m uvicorn benchmarks.serving_ceiling:app --workers 2``.
"""

from __future__ import annotations

from fastapi import FastAPI

from serving.api.schemas.v1 import Car, PricePrediction

app = FastAPI(title="carprice ceiling")


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
