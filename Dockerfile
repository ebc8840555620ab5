# syntax=docker/dockerfile:1.7
# The carprice image: the API (`carprice serve`), the monitor, the MLflow server and the trainer
# all run from it. Two stages: uv resolves nothing (uv.lock is the truth) and builds /opt/venv in
# the builder; the final stage gets the venv and the project's code only, and runs as a user.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

FROM ${PYTHON_IMAGE} AS builder
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
# The dependency layer: rebuilt only when pyproject.toml or uv.lock change, not on a code change.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-project
COPY pyproject.toml uv.lock README.md ./
COPY carprice ./carprice
COPY pipelines ./pipelines
COPY serving ./serving
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="carprice" \
      org.opencontainers.image.description="Used-car price API, monitor and pipeline"
RUN groupadd --system --gid 10001 carprice \
    && useradd --system --uid 10001 --gid carprice --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin carprice \
    && mkdir -p /app /tmp/prometheus \
    && chown carprice:carprice /app /tmp/prometheus
COPY --from=builder /opt/venv /opt/venv
# No PROMETHEUS_MULTIPROC_DIR here: the API's deployments set it (compose, k8s: /tmp/prometheus)
# and `carprice serve` makes a fresh one without it, while every other process of the image
# (the monitor, mlflow, the trainer) must not run prometheus_client in multiprocess mode: the
# monitor died at import under a read-only root with an empty /tmp. The shutdown timeout lets
# in-flight requests and the prediction log drain before the orchestrator's kill (compose
# stop_grace_period / k8s terminationGracePeriodSeconds are set above it).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CARPRICE_SHUTDOWN_TIMEOUT=25 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=1
WORKDIR /app
USER 10001:10001
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/live', timeout=2)"]
CMD ["carprice", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
