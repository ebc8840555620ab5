"""The compose stack without Docker, end to end: a real `mlflow server` on PostgreSQL (its own
database) with its artifacts in a real S3 store (SeaweedFS), `dvc repro` in a copy of the repo
logging to it, the API (`carprice serve --workers 2`) serving what it registered, a move of the
`production` alias with the MLflow client that the API follows by itself, and the monitor
(`carprice monitor`) reporting the drift of the traffic the API logged. Then the start-up
failures: an empty registry, no MLflow server, no S3 store - live, not ready, one log line,
ready by itself.

One stack serves every test (module-scoped fixtures), and what can start in parallel does: the
S3 store, the MLflow server, the repo copy and the API start together, the monitor starts while
the pipeline runs. Every wait polls for its condition; none is a fixed sleep.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.pipeline import copy_project
from carprice.traffic import cars_frame, parse_spec, to_json_cars
from pipelines.synthetic import generate, write_csv
from serving.main import create_app
from tests.delivery.stack import (
    Forwarder,
    MlflowServer,
    Process,
    SeaweedS3,
    free_ports,
    postgres_databases,
    python_env,
    wait_until,
)
from tests.serving.auth_support import TEST_SECRET, make_settings
from tests.serving.live import live_server

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.timeout(900)]

CAR = {
    "brand": "Toyota", "model": "Corolla", "fuel_type": "Petrol", "transmission": "Manual",
    "body_type": "Sedan", "seller_type": "Dealer", "owner_type": "First", "color": "White",
    "year": 2019, "km_driven": 45000, "engine_cc": 1598, "max_power_bhp": 121,
    "mileage_kmpl": 17.5, "seats": 5, "torque_nm": 153, "doors": 4,
}  # fmt: skip
NO_MODEL = "no version of car-price has the alias 'production'"
# Requests in the MLflow server's access log: a poll of the alias, an artifact listing.
POLL = '"GET /api/2.0/mlflow/registered-models/get'
DOWNLOAD = '"GET /api/2.0/mlflow-artifacts/artifacts'


@dataclass
class Stack:
    root: Path
    s3: SeaweedS3
    mlflow: MlflowServer
    repo: Path
    env: dict[str, str]
    app_database: str

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.mlflow.url, registry_uri=self.mlflow.url)

    def register_copy(self, name: str, of_version: str = "1", alias: str = "production") -> str:
        """A new version of ``name`` with the artifacts of car-price/``of_version``, aliased."""
        client = self.client()
        source = client.get_model_version("car-price", of_version)
        with contextlib.suppress(Exception):
            client.create_registered_model(name)
        # MLflow 3: a logged model's source is models:/<model id>, and the server wants that
        # id named too (the version read back over REST has model_id None).
        model_id = getattr(source, "model_id", None) or source.source.removeprefix("models:/")
        version = client.create_model_version(
            name, source.source, run_id=source.run_id, model_id=model_id
        )
        wait_until(
            lambda: client.get_model_version(name, version.version).status == "READY",
            60,
            f"{name}/{version.version} READY",
        )
        client.set_registered_model_alias(name, alias, version.version)
        return str(version.version)


@dataclass
class Api:
    url: str
    key: str
    """An admin API key (``carprice users bootstrap``)."""
    proc: Process
    env: dict[str, str]


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (
        f"{args}: {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """S3 and the MLflow server starting (not waited for: see ``Stack.mlflow.wait``), and a
    small copy of the repo (git and DVC) whose pipeline logs to that server."""
    root = tmp_path_factory.mktemp("stack")
    s3 = SeaweedS3(root / "s3")
    with postgres_databases("mlflow_e2e", "carprice_e2e") as (mlflow_db, app_db):
        s3.start()
        mlflow = MlflowServer(root, mlflow_db, s3)
        try:
            # While the servers start: the repo copy, small enough for the CI budget.
            repo = root / "repo"
            repo.mkdir()
            copy_project(repo)
            (repo / "dvc.lock").unlink(missing_ok=True)
            params = yaml.safe_load((repo / "params.yaml").read_text())
            params["validate"]["min_rows"] = 500
            params["preprocess"]["reference_rows"] = 300
            params["train"].update({"max_iter": 60, "cv_folds": 2})
            (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            write_csv(generate(1_500, seed=3).listings, repo / "data" / "raw" / "cars.csv")
            env = python_env()
            # Only the tracking server's URL: the server holds the S3 credentials (proxied
            # artifacts), so none are given to the pipeline, the API or the monitor.
            env.update(MLFLOW_TRACKING_URI=mlflow.url, MLFLOW_DISABLE_TELEMETRY="true")
            for key in list(env):
                if key.startswith(("AWS_", "MLFLOW_S3_", "CARPRICE_", "PROMETHEUS_")):
                    del env[key]
            env.update(
                GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.com",
                GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.com",
            )  # fmt: skip
            run(["git", "init", "-q", "-b", "main"], repo, env)
            run(["dvc", "commit", "-f", "-q", "data.dvc"], repo, env)
            run(["git", "add", "-A"], repo, env)
            run(["git", "commit", "-q", "-m", "copy"], repo, env)
            s3.wait()
            yield Stack(root, s3, mlflow, repo, env, app_db)
        finally:
            mlflow.proc.stop()
            s3.stop()


def serving_env(stack: Stack, role: str) -> dict[str, str]:
    """What the API and the monitor share (docker-compose.yml's x-carprice-env), with a drift
    reports folder of ``role``'s own: in compose they are separate containers, so the API
    finds the monitor's HTML in MLflow, not on disk."""
    env = dict(stack.env)
    env.update(
        CARPRICE_ENV="test",
        CARPRICE_JWT_SECRET=TEST_SECRET,
        CARPRICE_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:5432/{stack.app_database}",
        CARPRICE_BCRYPT_ROUNDS="4",
        CARPRICE_RELOAD_INTERVAL="1",
        CARPRICE_RATELIMIT_NAMESPACE=f"carprice-e2e:{secrets.token_hex(4)}:",
        CARPRICE_DRIFT_REPORTS_DIR=str(stack.root / role / "drift-reports"),
    )
    return env


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[Api]:
    """`carprice serve --workers 2` against the stack, started before any model exists (and
    maybe before the MLflow server answers)."""
    env = serving_env(stack, "api")
    env["PROMETHEUS_MULTIPROC_DIR"] = str(stack.root / "api" / "prometheus")  # as compose's api
    key_file = stack.root / "api-key"
    run(["carprice", "users", "bootstrap", "--key-file", str(key_file)], stack.repo, env)
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    proc = Process.start(
        ["carprice", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        stack.root / "api.log",
        env,
        cwd=stack.root,
    )
    try:
        wait_until(lambda: health(url)[0] == 200, 120, "API live", proc)
        yield Api(url, key_file.read_text().strip(), proc, env)
    finally:
        code = proc.stop()
    assert code == 0, proc.tail()
    assert "Traceback" not in proc.text(), proc.tail(80)


@pytest.fixture(scope="module")
def monitor(stack: Stack, api: Api) -> Iterator[tuple[str, Process]]:
    """`carprice monitor` against the stack (its URL, the process): started, not waited for,
    so its imports overlap the pipeline's run."""
    env = serving_env(stack, "monitor")
    env.update(CARPRICE_DRIFT_MIN_ROWS="200")
    (port,) = free_ports(1)
    args = ["carprice", "monitor", "--interval", "2", "--window", "1000", "--port", str(port)]
    proc = Process.start(args, stack.root / "monitor.log", env, cwd=stack.root)
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        code = proc.stop()
    assert code == 0, proc.tail()
    assert "Traceback" not in proc.text(), proc.tail(80)


@pytest.fixture(scope="module")
def trained(stack: Stack, api: Api, monitor: tuple[str, Process]) -> Stack:
    """`dvc repro` against the server: version 1 of car-price, promoted to production."""
    stack.mlflow.wait()
    env = dict(stack.env)
    # One OpenMP thread, as serving uses: on a shared 2-core machine the boosting's per-tree
    # parallel regions spin against the other jobs (a 60-tree fit took ~60 s instead of ~2 s).
    env["OMP_NUM_THREADS"] = "1"
    started = time.monotonic()
    out = run(["dvc", "repro"], stack.repo, env)
    assert "@production" in out, out[-2000:]
    print(f"dvc repro against the stack: {time.monotonic() - started:.1f} s")
    return stack


def health(url: str) -> tuple[int, int]:
    live = httpx.get(f"{url}/v2/health/live", timeout=5).status_code
    ready = httpx.get(f"{url}/v2/health/ready", timeout=5).status_code
    return live, ready


def wait_ready(url: str, timeout: float = 60) -> None:
    wait_until(lambda: health(url) == (200, 200), timeout, "ready by itself")


def predict(api: Api) -> dict[str, Any]:
    answer = httpx.post(
        f"{api.url}/v1/predict", json=CAR, headers={"X-API-Key": api.key}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def in_a_row(check: Any, count: int = 8) -> Any:
    """``check`` made stricter: true once it held ``count`` times in a row (with 2 workers
    behind one port, one answer says little about the other worker)."""
    held: list[bool] = []

    def stable() -> bool:
        held.append(bool(check()))
        return held[-count:] == [True] * count

    return stable


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The series of a /metrics page: (name, sorted labels) -> value."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_api_before_any_model_is_live_not_ready_and_says_why(stack: Stack, api: Api) -> None:
    stack.mlflow.wait()
    wait_until(lambda: api.proc.text().count(NO_MODEL) == 2, 60, "one line per worker", api.proc)
    assert health(api.url) == (200, 503)
    # The workers poll every second; let a few polls pass: the line is not repeated.
    polls = stack.mlflow.proc.text().count(POLL)
    wait_until(lambda: stack.mlflow.proc.text().count(POLL) >= polls + 4, 30, "more polls")
    assert api.proc.text().count(NO_MODEL) == 2, api.proc.tail()


def test_repro_registers_production_with_its_artifacts_in_s3(trained: Stack) -> None:
    client = trained.client()
    version = client.get_model_version_by_alias("car-price", "production")
    assert version.version == "1"
    keys = trained.s3.object_keys()
    assert any(k.startswith("artifacts/") and k.endswith("MLmodel") for k in keys), keys[:20]


def test_api_turns_ready_by_itself_and_follows_the_alias(trained: Stack, api: Api) -> None:
    wait_until(in_a_row(lambda: health(api.url)[1] == 200), 90, "API ready by itself", api.proc)
    first = predict(api)
    assert first["model_version"] == "1"
    assert first["price"] > 0

    # "Version 2" (the same artifacts, a new registry version) gets the alias, with the client.
    v2 = trained.register_copy("car-price")
    wait_until(
        in_a_row(lambda: predict(api)["model_version"] == v2),
        60,
        "API swapped to the new production version",
        api.proc,
    )
    # Both workers swapped (each says so once), and /metrics sums them (multiprocess mode):
    # the lowest worker's readiness, the highest worker's version.
    assert api.proc.text().count(f"now serving car-price/{v2}") == 2, api.proc.tail()
    series = samples(api.url)
    assert series[("carprice_model_ready", ())] == 1
    assert series[("carprice_model_version", ())] == float(v2)


def test_monitor_reports_the_drift_of_the_logged_traffic(
    trained: Stack, api: Api, monitor: tuple[str, Process]
) -> None:
    monitor_url, proc = monitor
    version = trained.client().get_model_version_by_alias("car-price", "production").version
    # 400 cars, their model year 3 years older and their mileage half as much again than
    # the training data's: two features drifted, through the API into the prediction log.
    cars = to_json_cars(cars_frame(400, seed=7, shifts=parse_spec("year-3,km_driven*1.5")))
    answer = httpx.post(
        f"{api.url}/v1/predict/batch", json=cars, headers={"X-API-Key": api.key}, timeout=60
    )
    assert answer.status_code == 200, answer.text

    def stored() -> bool:  # the gauges are set first, then the report is stored everywhere
        return samples(monitor_url)[("carprice_monitor_runs_total", (("outcome", "ok"),))] >= 1

    wait_until(stored, 180, "a drift report of the monitor", proc)
    series = samples(monitor_url)
    assert ("carprice_drift_share", (("model_version", version),)) in series
    drifted = {
        dict(labels)["feature"]
        for (name, labels), value in series.items()
        if name == "carprice_drift_feature_drifted" and value == 1
    }
    assert {"year", "km_driven"} <= drifted, drifted
    assert series[("carprice_monitor_last_run_timestamp_seconds", ())] > 0

    # What the monitor stored reaches the API: the summary from the database, the HTML
    # from the version's MLflow run (in S3), as the API's own reports folder is empty.
    admin = {"X-API-Key": api.key}
    summary = httpx.get(f"{api.url}/v1/monitoring/drift", headers=admin, timeout=10).json()
    assert summary["model_version"] == version, summary
    assert summary["current_rows"] >= 400
    assert {"year", "km_driven"} <= set(summary["drifted_features"])
    assert any("/drift/" in k and k.endswith("drift.html") for k in trained.s3.object_keys())
    page = httpx.get(f"{api.url}/v1/monitoring/drift/report", headers=admin, timeout=60)
    assert page.status_code == 200, page.text[:500]
    assert page.headers["content-type"].startswith("text/html")


class Lines(logging.Handler):
    """The ``serving`` log records of one app, as text."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")

    def matching(self, needle: str) -> list[str]:
        return [line for line in self.lines if needle in line]


@contextlib.contextmanager
def captured() -> Iterator[Lines]:
    handler = Lines()
    logger = logging.getLogger("serving")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def test_unreachable_mlflow_server_at_start_then_up(trained: Stack) -> None:
    late = Forwarder(trained.mlflow.port)  # nothing listens there yet
    settings = make_settings(
        mlflow_tracking_uri=f"http://127.0.0.1:{late.port}", reload_interval=0.5
    )
    with captured() as log, live_server(create_app(settings), ready=False) as server:
        wait_until(lambda: len(log.matching("registry unavailable")) == 1, 30, "the log line")
        # The poller goes on every 0.5 s (a refused connection leaves no trace to count).
        time.sleep(2)
        assert health(server.url) == (200, 503)
        assert len(log.matching("registry unavailable")) == 1, log.lines
        late.open()
        try:
            wait_ready(server.url)
        finally:
            late.close()
        assert log.matching("now serving car-price/")


def test_unreachable_s3_store_at_start_then_up(trained: Stack) -> None:
    """Last: it stops the stack's S3 store (and starts it again)."""
    trained.s3.stop()
    try:
        settings = make_settings(mlflow_tracking_uri=trained.mlflow.url, reload_interval=0.25)
        with captured() as log, live_server(create_app(settings), ready=False) as server:
            wait_until(lambda: bool(log.matching("rejected")), 60, "the log line")
            # Retried with backoff (0.25, 0.5, 1, 2 s ... 8 s): wait for a few failed downloads.
            downloads = trained.mlflow.proc.text().count(DOWNLOAD)
            wait_until(
                lambda: trained.mlflow.proc.text().count(DOWNLOAD) >= downloads + 2,
                30,
                "retried downloads",
            )
            assert health(server.url) == (200, 503)
            problems = [line for line in log.lines if line.startswith(("WARNING", "ERROR"))]
            assert len(problems) == 1, log.lines
            trained.s3.start()
            trained.s3.wait()
            wait_ready(server.url, timeout=90)
            assert log.matching("now serving car-price/")
    finally:
        if trained.s3.proc is None:
            trained.s3.start()
