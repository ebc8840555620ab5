"""``serving.main``: the app as uvicorn imports it (a bad setting is one line and exit code 2),
and what its lifespan does once the model is loaded."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time

from serving.main import create_app
from tests.serving.support import ServingRegistry, make_settings, running


def test_a_bad_setting_stops_the_import_with_one_line() -> None:
    env = {**os.environ, "CARPRICE_BATCH_MAX": "lots"}
    done = subprocess.run(
        [sys.executable, "-c", "import serving.main as m; m.app"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert (
        done.stderr == "configuration error: CARPRICE_BATCH_MAX: Input should be a valid "
        "integer, unable to parse string as an integer\n"
    )


def test_the_heap_is_frozen_once_the_model_is_loaded(registry: ServingRegistry) -> None:
    # The model loads in the background after start-up: frozen then, full collections of the
    # worker never re-scan it (they took 150-600 ms each under load when they did).
    app = create_app(make_settings(registry))
    with running(app):
        estimator = app.state.models.production.estimator
        deadline = time.monotonic() + 30
        while any(o is estimator for o in gc.get_objects()):
            assert time.monotonic() < deadline, "the loaded model was never frozen"
            time.sleep(0.2)


def test_fastapis_opentelemetry_is_off_unless_asked_for() -> None:
    # Off, FastAPI's per-request check of the OTel providers is one look at its config.
    off = create_app(make_settings(None))
    assert not off._native_telemetry.enabled()
    assert not any(off._telemetry[k] for k in ("tracing", "metrics", "logs"))
    on = create_app(make_settings(None, opentelemetry=True))
    assert all(on._telemetry[k] for k in ("tracing", "metrics", "logs"))
