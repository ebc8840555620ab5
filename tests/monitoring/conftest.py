"""The drift registry fixture, shared with the serving tests (one instance per session)."""

from tests.serving.drift_support import drift_model, drift_registry, log_db  # noqa: F401
