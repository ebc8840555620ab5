"""Serving configuration: typed, read once from ``CARPRICE_*`` environment variables.

``MLFLOW_TRACKING_URI`` keeps MLflow's own name. Every field is documented in README.md.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

DEFAULT_JWT_SECRET = "change-me"  # noqa: S105 - the placeholder we refuse outside development


class Settings(BaseSettings):
    """Everything the API reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="CARPRICE_", extra="ignore", frozen=True)

    env: Literal["development", "production", "test"] = "production"
    """Deployment environment; ``development`` allows the default JWT secret."""

    # --- model ---
    mlflow_tracking_uri: str = Field(
        "sqlite:///mlruns/mlflow.db",
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "CARPRICE_MLFLOW_TRACKING_URI"),
    )
    """MLflow tracking/registry URI (MLflow's own variable name)."""
    model_name: str = "car-price"
    """Registered model to serve."""
    model_alias: str = "production"
    """Alias of the registered model that /v1 and unpinned /v2 requests use."""
    reload_interval: float = Field(30.0, gt=0)
    """Seconds between polls of the alias for a newly promoted version."""
    pinned_models_max: int = Field(4, ge=1)
    """How many pinned (per-request) model versions /v2 keeps loaded (LRU)."""
    registry_timeout: float = Field(10.0, gt=0)
    """Seconds a registry call may take before it is given up (no minutes-long retries)."""
    model_threads: int = Field(1, ge=1)
    """OpenMP threads one prediction may use. 1 suits a server: requests and workers already
    run in parallel, and more threads per call oversubscribe the cores."""

    # --- server ---
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Level of the API's JSON logs (access log included)."""
    shutdown_timeout: float = Field(30.0, gt=0)
    """Seconds a graceful shutdown waits for in-flight requests before closing them."""

    compiled_predict: bool = True
    """Predict with the compiled fast path (:mod:`serving.inference.fastpath`: the fitted trees
    walked directly, no DataFrame) when the model has a shape it knows and reproduces the
    model's own ``predict`` exactly on the input example; false always uses the model's
    ``predict``."""
    microbatch_max_rows: int = Field(16, ge=1)
    """Concurrent single-car predictions coalesced into one model call (fast path only);
    batches this size or larger skip coalescing."""
    microbatch_wait_ms: float = Field(0.0, ge=0)
    """How long the first request of a micro-batch waits for others (0: until the event loop's
    next turn, adding no latency)."""
    fast_lane: bool = True
    """Serve ``POST /v1/predict`` and ``/v1/predict/batch`` from the fast lane
    (:mod:`serving.api.fastlane`): the same answers for a fraction of the CPU. Off sends every
    request through the full FastAPI stack."""
    opentelemetry: bool = False
    """FastAPI's native OpenTelemetry: spans, metrics and logs of every request through the OTel
    SDK the process configured (``opentelemetry-instrument`` or your own). Off, FastAPI does
    not ask the OTel API for its providers on every request (2.4 us each, for nothing when no
    SDK is set up); the Prometheus metrics and the access log do not depend on it."""
    gc_freeze: bool = True
    """Move the start-up heap (MLflow, scikit-learn, the model) out of the garbage collector's
    sight after loading, so full collections on the request path stay short."""

    # --- requests ---
    batch_max: int = Field(1000, ge=1)
    """Most cars in one /v1/predict/batch or /v2 infer request."""
    max_body_bytes: int = Field(1_048_576, ge=1024)
    """Largest accepted request body of the routes taking lists of cars
    (``/v1/predict/batch``, ``/v1/feedback``, ``/v2`` infer: 1,000 cars of up to ~1 KB each;
    413 above it)."""
    max_small_body_bytes: int = Field(16_384, ge=1024)
    """Largest accepted body of every other route: one car (``/v1/predict``, ~0.3 KB, at most
    ~4 KB with every category 64 escaped characters long), the login form, an admin request
    (413 above it, decided on ``Content-Length`` before anything is read)."""
    max_json_values: int = Field(50_000, ge=100)
    """Most values and keys in one JSON body, counted from its commas and colons before it is
    parsed (413 above it). A full 1,000-car batch holds ~32,000."""
    max_json_depth: int = Field(32, ge=4, le=1000)
    """Deepest nesting of a JSON body (422 ``limit_exceeded`` below it)."""
    max_json_keys: int = Field(64, ge=16)
    """Most keys in one JSON object (a car has 16)."""
    max_json_string: int = Field(1024, ge=256)
    """Longest string (or key) in a JSON body, in characters."""
    refusal_delay: float = Field(1.0, ge=0, le=30)
    """Seconds the answer to a refused request is held before it is sent (an asyncio sleep: no
    CPU): a 401, a 413, a 422 ``limit_exceeded`` or ``invalid_json``
    (:mod:`serving.api.refusals`). A client looping on refusals then gets one a second per
    connection instead of thousands; 0 answers at once."""
    refusal_hold_max: int = Field(128, ge=0)
    """Most refused answers one worker holds at once; past it they are sent at once (the
    memory of held connections stays bounded)."""

    # --- cache ---
    cache_url: str | None = None
    """``redis://host:port/db`` for a shared Redis cache; unset uses an in-process LRU+TTL cache."""
    cache_ttl: int = Field(3600, ge=1)
    """Seconds a cached prediction lives."""
    cache_namespace: str = "carprice:price:"
    """Prefix of the cache keys in Redis (lets deployments, or test runs, share one Redis)."""
    cache_max_entries: int = Field(100_000, ge=1)
    """Size of the in-process cache (when no Redis is configured)."""
    cache_l1_entries: int = Field(10_000, ge=0)
    """Size of the in-process L1 in front of Redis (0: every look-up goes to Redis). Safe with
    any number of replicas: a price is keyed by model version and never changes."""
    cache_write_queue: int = Field(100_000, ge=1)
    """Most prices waiting to be written to Redis (behind the requests); beyond it new prices
    are not written (counted as ``dropped``)."""
    redis_timeout: float = Field(0.25, gt=0)
    """Seconds a Redis call may take before the request goes on without it. Measured on the
    event loop, so it includes the loop's own lag under load: at 0.05 s, concurrent
    1,000-car batches timed out against a healthy local Redis and opened the breaker."""
    cache_breaker_failures: int = Field(3, ge=1)
    """Consecutive Redis failures that open the circuit breaker (Redis is then skipped)."""
    cache_breaker_reset: float = Field(5.0, gt=0)
    """Seconds the breaker stays open before one trial call is let through to Redis."""

    # --- access control ---
    database_url: str = "sqlite:///carprice.db"
    """SQLAlchemy URL of the users/keys database (PostgreSQL supported); also the prediction
    log's unless ``prediction_log_url`` is set."""
    database_migrate_on_start: bool = True
    """Apply the Alembic migrations when the API starts (else run ``carprice db upgrade``)."""
    bcrypt_rounds: int = Field(12, ge=4, le=16)
    """bcrypt cost factor for new password hashes (each +1 doubles the login time)."""
    jwt_secret: str = DEFAULT_JWT_SECRET
    """HS256 signing secret; must be set outside development."""
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    """The only algorithm accepted on tokens."""
    jwt_issuer: str = "carprice"
    jwt_audience: str = "carprice-api"
    jwt_ttl: int = Field(3600, ge=60)
    """Seconds an access token is valid."""
    jwt_leeway: int = Field(10, ge=0)
    """Seconds of clock skew tolerated on ``exp``/``iat``/``nbf``."""
    api_key_cache_ttl: float = Field(5.0, ge=0)
    """Seconds a verified API key is trusted without a database look-up (revocation delay)."""
    rate_limit: str = "600/minute"
    """Requests per principal on protected endpoints."""
    ratelimit_url: str | None = None
    """Redis URL for the shared rate-limit counters; unset reuses ``cache_url``, and with neither
    every limit (login included) is counted per process."""
    ratelimit_namespace: str = "carprice:rl:"
    """Prefix of the rate-limit keys in Redis (lets deployments share one Redis)."""
    ratelimit_batch: int = Field(100, ge=0)
    """Most hits one process counts for a key before settling with Redis; the batch used is
    ``min(this, limit // 100)`` (0 = one Redis round trip per request, exact). Slack: across
    P processes at most ``limit + (P - 1) * batch`` requests pass in a window."""
    ratelimit_sync_interval: float = Field(0.1, gt=0)
    """Seconds between settles of the locally counted hits with Redis."""
    login_rate_limit: str = "10/minute"
    """Login attempts per client IP."""
    cors_origins: list[str] = []
    """Origins allowed by CORS (none by default)."""

    # --- prediction log ---
    prediction_log: bool = True
    """Log every served prediction, one row per car (:mod:`serving.monitoring.prediction_log`)."""
    prediction_log_url: str | None = None
    """SQLAlchemy URL of the prediction log's database; unset uses ``database_url``. Migrated
    on start like the app database (when ``database_migrate_on_start``)."""
    prediction_log_queue_max: int = Field(100_000, ge=1)
    """Most logged cars waiting for the writer; beyond it rows are dropped and counted
    (``carprice_prediction_log_dropped_total``), never waited for."""
    prediction_log_batch_rows: int = Field(5_000, ge=1)
    """Most cars the writer inserts in one statement."""
    prediction_log_flush_interval: float = Field(0.5, gt=0)
    """Seconds the writer waits to gather a batch before writing what it has."""
    prediction_log_timeout: float = Field(5.0, gt=0)
    """Seconds a connection attempt or statement of the writer may take (an unreachable
    database costs the writer this, never a request)."""
    prediction_log_retention_days: float | None = Field(None, gt=0)
    """Days of predictions ``carprice predictions prune`` keeps when no ``--older-than`` is
    given (unset: prune needs ``--older-than``)."""

    # --- drift monitoring (carprice drift report / carprice monitor) ---
    drift_window_rows: int = Field(5_000, ge=1)
    """Logged cars a drift report reads by default (the production version's newest);
    ``carprice monitor --window`` and ``carprice drift report --last`` override it."""
    drift_min_rows: int = Field(500, ge=2)
    """Fewest logged cars a drift report is computed on: fewer give no report (exit 2, or a
    skipped monitor run), since distances between tiny samples are mostly noise."""
    drift_share: float = Field(0.5, gt=0, le=1)
    """Share of the 16 features that must drift for the data set to count as drifted
    (Evidently's rule and default)."""
    drift_reports_dir: str = "drift-reports"
    """Folder of the monitor's HTML reports (the API serves them from here, so both must see
    the same folder; the JSON is in the database)."""
    drift_reports_keep: int = Field(500, ge=1)
    """HTML reports the monitor keeps in ``drift_reports_dir`` (older files are deleted; their
    JSON stays in the database and their HTML in MLflow)."""
    evidently_workspace: str | None = None
    """A local Evidently workspace folder the monitor adds each run to (``evidently ui
    --workspace DIR`` then shows the history); unset: none."""

    @property
    def prediction_log_database_url(self) -> str:
        """Where the prediction log lives: ``prediction_log_url``, else ``database_url``."""
        return self.prediction_log_url or self.database_url

    @property
    def jwt_secret_problem(self) -> str | None:
        """Why ``jwt_secret`` may not sign or verify tokens here (None: it may).

        Not a validation error: only token issuing and checking need the secret, so the API
        still starts without one (live, not ready, API keys working) and the CLI's user and key
        commands run. Outside development the placeholder and short secrets are refused.
        """
        if self.env == "development":
            return None
        how = "set it to 32+ random characters, e.g. CARPRICE_JWT_SECRET=$(openssl rand -hex 32)"
        if self.jwt_secret == DEFAULT_JWT_SECRET:
            return f"CARPRICE_JWT_SECRET is not set: {how} (or CARPRICE_ENV=development for a demo)"
        if len(self.jwt_secret) < 32:
            return f"CARPRICE_JWT_SECRET is shorter than 32 characters: {how}"
        return None


def describe_errors(exc: ValidationError | SettingsError) -> str:
    """Why the settings could not be read, as one line naming each variable (never its value).

    ``exc`` is what :class:`Settings` raises: a ``ValidationError`` (a bad value), or a
    ``SettingsError`` (a list or dict variable that is not JSON).
    """
    if isinstance(exc, SettingsError):
        found = re.search(r'field "(\w+)"', str(exc))
        name = f"CARPRICE_{found[1].upper()}" if found else "a CARPRICE_* variable"
        return f'{name}: not valid JSON (a list looks like ["a", "b"])'
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        name = field if field.isupper() else f"CARPRICE_{field.upper()}"
        problems.append(f"{name}: {error['msg']}")
    return "; ".join(problems) or str(exc)


@lru_cache
def get_settings() -> Settings:
    """The settings, read once per process."""
    return Settings()
