"""The monitoring stack for real: the API (2 workers) and the drift monitor as their own
processes, ``carprice traffic`` against the API, a real Prometheus scraping both with the
shipped alert rules, and ``evidently ui`` on the monitor's workspace.

Every PromQL expression of the Grafana dashboard is evaluated through Prometheus' HTTP API
(no Grafana server can run here): none may fail, and the traffic, latency, cache, model version
and drift panels must return data.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.serving.drift_support import DriftRegistry

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DASHBOARD = ROOT / "monitoring" / "grafana" / "dashboards" / "carprice.json"
RULES = ROOT / "monitoring" / "prometheus" / "rules.yml"
# Panels that must show data after traffic and one monitor run.
MUST_HAVE_DATA = {
    "Request rate by route", "Latency p50 / p95 / p99", "Cache hit ratio",
    "Predictions per model version", "Model version served", "Model ready", "Drift share",
    "Per-feature drift score", "Live MAE", "Monitor runs",
}  # fmt: skip

pytestmark = [pytest.mark.integration]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], bool], timeout: float, procs: list[Any]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if check():
                return
        for proc in procs:
            assert proc.poll() is None, f"{proc.args[:3]} exited while waiting for {what}"
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def grant(db_url: str) -> tuple[str, str]:
    """An admin and a predict API key in the API's database."""
    from serving.access.accounts import Accounts
    from serving.access.passwords import PasswordHasher
    from serving.access.principals import Role
    from serving.store.database import open_database

    db = open_database(db_url, migrate=True)
    try:
        accounts = Accounts(db, PasswordHasher(4))
        keys = []
        for name, role in (("ops", Role.ADMIN), ("shop", Role.PREDICT)):
            accounts.create_user(name, "a-long-test-password", role)
            keys.append(accounts.create_key(name, "stack test").key)
        return keys[0], keys[1]
    finally:
        db.close()


def promql(expr: str) -> str:
    # Grafana's interval variables, as Grafana would fill them for a short range.
    return expr.replace("$__rate_interval", "30s").replace("$__interval", "5s")


def test_dashboard_queries_evaluate_against_the_running_stack(
    drift_registry: DriftRegistry, tmp_path: Path
) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail("prometheus is missing: run `bash scripts/prometheus.sh`")
    db_url = f"sqlite:///{tmp_path}/carprice.db"
    admin_key, predict_key = grant(db_url)
    api_port, monitor_port, prom_port, ui_port = (free_port() for _ in range(4))
    workspace = tmp_path / "evidently"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("CARPRICE_", "PROMETHEUS_"))
    } | {
        "CARPRICE_ENV": "development",
        "MLFLOW_TRACKING_URI": drift_registry.uri,
        "CARPRICE_DATABASE_URL": db_url,
        "CARPRICE_RELOAD_INTERVAL": "5",
        "CARPRICE_DRIFT_MIN_ROWS": "200",
        "CARPRICE_DRIFT_REPORTS_DIR": str(tmp_path / "reports"),
        "CARPRICE_EVIDENTLY_WORKSPACE": str(workspace),
        "CARPRICE_LOG_LEVEL": "WARNING",
        # A busy machine: registry calls take long, and the traffic must not hit the limiter.
        "CARPRICE_REGISTRY_TIMEOUT": "60",
        "CARPRICE_RATE_LIMIT": "100000/minute",
    }
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "carprice-api",
             "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}]},
            {"job_name": "carprice-monitor",
             "static_configs": [{"targets": [f"127.0.0.1:{monitor_port}"]}]},
        ],
    }  # fmt: skip
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    api_url = f"http://127.0.0.1:{api_port}"
    prom_url = f"http://127.0.0.1:{prom_port}"
    admin = {"X-API-Key": admin_key}
    with (
        process([str(BIN / "carprice"), "serve", "--workers", "2", "--port", str(api_port)],
                env, tmp_path / "api.log") as api,
        process([str(BIN / "carprice"), "monitor", "--interval", "4", "--window", "2000",
                 "--port", str(monitor_port)], env, tmp_path / "monitor.log") as monitor,
        process([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                 f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                env, tmp_path / "prometheus.log") as prom,
    ):  # fmt: skip
        procs = [api, monitor, prom]
        ready = f"{api_url}/v2/health/ready"
        wait_for("the API", lambda: httpx.get(ready, timeout=2).status_code == 200, 420, procs)

        traffic = subprocess.run(
            [str(BIN / "carprice"), "traffic", "--url", api_url, "--api-key", predict_key,
             "--rate", "40", "--duration", "12", "--feedback", "0.3", "--batch", "2",
             "--drift", "year-3,km_driven*1.5:0.5"],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert traffic.returncode == 0, traffic.stdout + traffic.stderr
        assert "answers: 200 x" in traffic.stdout, traffic.stdout
        accepted = re.search(r"feedback: (\d+) of (\d+) reports accepted", traffic.stdout)
        assert accepted, traffic.stdout
        assert accepted[1] == accepted[2] != "0", traffic.stdout

        def stored() -> bool:
            # The monitor also ran while the traffic was still coming: wait for a report made
            # after the traffic, which is one whose window holds the feedback too.
            answer = httpx.get(f"{api_url}/v1/monitoring/drift", headers=admin)
            return answer.status_code == 200 and answer.json()["regression"] is not None

        wait_for("a stored drift report with the traffic's feedback", stored, 300, procs)
        summary = httpx.get(f"{api_url}/v1/monitoring/drift", headers=admin).json()
        assert summary["current_rows"] >= 200
        assert {"year", "km_driven"} <= set(summary["drifted_features"])
        assert summary["regression"]["rows"] > 0  # traffic's feedback reached the log
        page = httpx.get(f"{api_url}/v1/monitoring/drift/report", headers=admin, timeout=30)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")

        def query(expr: str) -> list[Any]:
            answer = httpx.get(f"{prom_url}/api/v1/query", params={"query": expr}, timeout=10)
            body = answer.json()
            assert answer.status_code == 200, (expr, body)
            assert body["status"] == "success", (expr, body)
            return list(body["data"]["result"])

        def scraped() -> bool:
            return bool(query("carprice_drift_share")) and bool(
                query('rate(http_requests_total{job="carprice-api"}[30s]) > 0')
            )

        wait_for("Prometheus to scrape the API and the monitor", scraped, 60, procs)
        panels = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]
        assert panels

        def empty_panels() -> list[str]:
            empty: list[str] = []
            for panel in panels:
                for target in panel["targets"]:
                    result = query(promql(target["expr"]))  # must evaluate without error
                    if panel["title"] in MUST_HAVE_DATA and not result:
                        empty.append(f"{panel['title']}: {target['expr']}")
            return empty

        # The traffic panels need a few scrapes of the rates, and a gauge the monitor set just
        # before the report the API showed may not be scraped yet: a few seconds' grace.
        deadline = time.monotonic() + 60
        while (empty := empty_panels()) and time.monotonic() < deadline:
            time.sleep(1)
        assert not empty, empty

        # The alert rules load and evaluate in the real server.
        rules = httpx.get(f"{prom_url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        loaded = {r["name"]: r for g in rules for r in g["rules"]}
        assert "CarpriceDatasetDrift" in loaded
        assert all(r["health"] in ("ok", "unknown") for r in loaded.values()), loaded

        # The monitor's workspace, served by Evidently's own UI.
        with process(
            [
                str(BIN / "evidently"),
                "ui",
                "--workspace",
                str(workspace),
                "--host",
                "127.0.0.1",
                "--port",
                str(ui_port),
            ],
            env,
            tmp_path / "ui.log",
        ) as ui:
            base = f"http://127.0.0.1:{ui_port}"
            wait_for("evidently ui", lambda: httpx.get(f"{base}/api/version").status_code == 200,
                     180, [ui])  # fmt: skip
            projects = httpx.get(f"{base}/api/projects", timeout=10).json()
            (project,) = [p for p in projects if p["name"] == "car-price"]
            runs = httpx.get(f"{base}/api/projects/{project['id']}/snapshots", timeout=10).json()
            assert len(runs) >= 1
