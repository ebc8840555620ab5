"""The FastAPI application: :func:`create_app` and the lifespan that owns the resources.

``uvicorn serving.main:app`` and ``carprice serve`` both work. ``app`` is built on first access
(PEP 562 module ``__getattr__``), so importing this module reads no settings and loads nothing;
the model, the cache and the poller start in the lifespan and are closed after it.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from prometheus_fastapi_instrumentator import Instrumentator
from pydantic import ValidationError
from pydantic_settings.exceptions import SettingsError
from starlette.types import ASGIApp

from serving.api import openapi
from serving.api.bodies import JsonLimits, max_body_of
from serving.api.errors import install_error_handlers
from serving.api.fastlane import FastLane
from serving.api.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from serving.api.refusals import Tarpit
from serving.api.routers import admin, auth, monitoring, v1, v2
from serving.api.security import close_auth, install, open_auth
from serving.inference.batching import MicroBatcher
from serving.inference.cache import build_cache
from serving.inference.model import load_version
from serving.inference.model_store import ModelStore
from serving.inference.prediction import PredictionService
from serving.inference.registry import Registry
from serving.monitoring import logs
from serving.monitoring.feedback import FeedbackService
from serving.monitoring.metrics import forget_dead_workers, http_instrumentation, worker_exited
from serving.monitoring.prediction_log import PredictionLog
from serving.settings import Settings, describe_errors, get_settings
from serving.store.database import create_db_engine

log = logging.getLogger(__name__)

DESCRIPTION = """
Prices used cars with the model registered in MLflow as `car-price@production`.

* **/v1**: typed JSON: one car (`POST /v1/predict`) or a list (`POST /v1/predict/batch`).
* **/v2**: the Open Inference Protocol (KServe / Triton V2 REST), with version pinning.

Errors share one body: `{"error": "<message>", "code": "<code>", "details": ...}`
(`error` is a string, as the Open Inference Protocol requires).
"""


async def _freeze_when_ready(models: ModelStore) -> None:
    """Once the first production model is loaded (in the background, after start-up),
    ``gc.freeze()`` the heap: MLflow, scikit-learn and the model live as long as the worker,
    and every full collection re-scanned them (measured under load: 150-600 ms each, a few
    per minute, the p99 tail). One full collection first, once per worker."""
    while not await models.wait_ready(3600):
        pass
    gc.collect()
    gc.freeze()


_NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
"""FastAPI's native OpenTelemetry off (``CARPRICE_OPENTELEMETRY=false``)."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. ``settings`` defaults to the environment's (``get_settings()``)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logs.configure(settings.log_level)
        forget_dead_workers()
        registry = Registry(
            settings.mlflow_tracking_uri, settings.model_name, settings.registry_timeout
        )
        models = ModelStore(
            registry,
            alias=settings.model_alias,
            reload_interval=settings.reload_interval,
            pinned_max=settings.pinned_models_max,
            registry_timeout=settings.registry_timeout,
            loader=functools.partial(
                load_version, threads=settings.model_threads, compiled=settings.compiled_predict
            ),
        )
        cache = build_cache(settings)
        log_engine = create_db_engine(
            settings.prediction_log_database_url, timeout=settings.prediction_log_timeout
        )
        prediction_log = (
            PredictionLog(
                log_engine,
                queue_max=settings.prediction_log_queue_max,
                batch_rows=settings.prediction_log_batch_rows,
                flush_interval=settings.prediction_log_flush_interval,
                # In the writer's thread: a log database that is down delays no start-up.
                migrate=settings.database_migrate_on_start,
            )
            if settings.prediction_log
            else None
        )
        app.state.models = models
        app.state.cache = cache
        app.state.prediction_log = prediction_log
        app.state.predictions = PredictionService(
            models,
            cache,
            settings.batch_max,
            MicroBatcher(settings.microbatch_max_rows, settings.microbatch_wait_ms / 1000),
            prediction_log,
        )
        app.state.feedback = FeedbackService(
            log_engine, settings.batch_max, settings.prediction_log_timeout
        )
        if prediction_log is not None:
            prediction_log.start()
        await open_auth(app.state, settings)
        # The monitor stores its drift reports beside the log: the API only reads them.
        app.state.monitoring_store = log_engine
        await models.start()
        freezer = asyncio.create_task(_freeze_when_ready(models)) if settings.gc_freeze else None
        log.info(
            "serving %s@%s from %s",
            settings.model_name,
            settings.model_alias,
            registry.tracking_uri,
        )
        try:
            yield
        finally:
            if freezer is not None:
                freezer.cancel()
            # uvicorn has answered every in-flight request by now: what they priced is queued.
            if prediction_log is not None:
                await asyncio.to_thread(prediction_log.close, settings.shutdown_timeout)
            await models.stop()
            await cache.aclose()
            await close_auth(app.state)
            log_engine.dispose()
            worker_exited()
            log.info("stopped")

    app = CarpriceAPI(
        title="carprice",
        summary="Used-car prices from the registry's production model.",
        description=DESCRIPTION,
        version=v2.server_version(),
        lifespan=lifespan,
        telemetry=None if settings.opentelemetry else _NO_TELEMETRY,
    )
    # On the app, not as a dependency override: FastAPI re-inspects every dependency of every
    # request while any override is set (~1 ms a request).
    app.state.settings = settings
    app.state.json_limits = JsonLimits.from_settings(settings)
    app.state.tarpit = Tarpit(settings.refusal_delay, settings.refusal_hold_max)
    body_limit = functools.partial(
        max_body_of, small=settings.max_small_body_bytes, large=settings.max_body_bytes
    )
    app.state.body_limit = body_limit
    install_error_handlers(app)
    install(app, settings)  # CORS, rate-limit headers, 401/403/429 mapping
    app.include_router(auth.router)
    app.include_router(admin.router)
    app.include_router(monitoring.router)
    app.include_router(v1.router)
    app.include_router(v2.router)
    # Added last = outermost of the stack behind the fast lane: the request id and access log
    # cover every request the lane hands over, 413s included.
    app.add_middleware(
        BodySizeLimitMiddleware, limit=body_limit, close_over=settings.max_body_bytes
    )
    app.add_middleware(RequestContextMiddleware)
    instrumentator = Instrumentator(excluded_handlers=["/metrics"])
    instrumentator.add(http_instrumentation).instrument(app).expose(app, include_in_schema=False)
    return app


class CarpriceAPI(FastAPI):
    """FastAPI with the fast lane (:mod:`serving.api.fastlane`) in front of its whole stack,
    FastAPI's own outer middleware included: the common /v1 prediction skips all of it."""

    def openapi(self) -> dict[str, Any]:
        """The generated document, completed by :func:`serving.api.openapi.finish`."""
        if self.openapi_schema is None:
            settings: Settings = self.state.settings
            self.openapi_schema = openapi.finish(super().openapi(), settings.batch_max)
        return self.openapi_schema

    def build_middleware_stack(self) -> ASGIApp:
        settings: Settings = self.state.settings
        return FastLane(
            super().build_middleware_stack(),
            fastapi_app=self,
            enabled=settings.fast_lane,
            body_limit=self.state.body_limit,
        )


_app: FastAPI | None = None


def __getattr__(name: str) -> Any:
    # ``serving.main:app`` for uvicorn, built from the environment on first access.
    global _app
    if name == "app":
        if _app is None:
            try:
                settings = get_settings()
            except (ValidationError, SettingsError) as exc:
                # One line for the operator, not a traceback from inside uvicorn's import.
                sys.stderr.write(f"configuration error: {describe_errors(exc)}\n")
                raise SystemExit(2) from None
            _app = create_app(settings)
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
