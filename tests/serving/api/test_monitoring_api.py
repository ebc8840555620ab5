"""``/v1/monitoring/drift[/report]``: what the monitor stored, for admins, without Evidently."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from serving.main import create_app
from serving.store import drift_reports
from serving.store.database import create_db_engine, upgrade
from tests.serving.support import MODEL, ServingRegistry, error_of, grant_key, make_settings

SUMMARY = {
    "model_name": MODEL, "model_version": "1", "reference_rows": 5000, "current_rows": 5000,
    "window": {"from": "2026-12-01T10:00:00Z", "to": "2026-12-01T12:00:00Z"},
    "dataset_drift": False, "drift_share": 0.0625, "drifted_features": ["year"],
    "features": {"year": {"drifted": True, "score": 0.21, "method": "Wasserstein distance (normed)",
                          "threshold": 0.1}},
    "prediction": {"drifted": False, "score": 0.03, "method": "Wasserstein distance (normed)",
                   "threshold": 0.1},
    "regression": {"rows": 812, "mae": 1610.2, "rmse": 2490.7, "mape": 0.081},
}  # fmt: skip


def test_serving_never_imports_evidently() -> None:
    # Evidently costs seconds to import: the API's whole import graph (the app built, the
    # monitoring routes included) must not pull it in.
    code = (
        "import sys\n"
        "import serving.main, serving.api.routers.monitoring, serving.store.drift_reports\n"
        "from serving.settings import Settings\n"
        "app = serving.main.create_app(Settings(env='development'))\n"
        "assert '/v1/monitoring/drift' in app.openapi()['paths']\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'evidently'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout


def test_drift_routes_serve_what_the_monitor_stored(
    registry: ServingRegistry, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/app.db"
    reports = tmp_path / "reports"
    app = create_app(make_settings(registry, database_url=url, drift_reports_dir=str(reports)))
    with TestClient(app, raise_server_exceptions=False) as client:
        admin = {"X-API-Key": grant_key(app, "admin")}
        predictor = {"X-API-Key": grant_key(app, "predict")}
        # Nothing stored yet: 404 saying how to get a report.
        for path in ("/v1/monitoring/drift", "/v1/monitoring/drift/report"):
            body = error_of(client.get(path, headers=admin), 404)
            assert "carprice monitor" in body["message"], body
            assert "carprice drift report" in body["message"], body
            assert client.get(path).status_code == 401
            assert client.get(path, headers=predictor).status_code == 403

        reports.mkdir()
        (reports / "drift-a.html").write_text("<!doctype html><title>older</title>")
        (reports / "drift-b.html").write_text("<!doctype html><title>newest</title>")
        engine: Engine = create_db_engine(url)
        drift_reports.save(engine, SUMMARY | {"model_version": "0"}, html_file="drift-a.html")
        newest = drift_reports.save(engine, SUMMARY, html_file="drift-b.html")

        answer = client.get("/v1/monitoring/drift", headers=admin)
        assert answer.status_code == 200
        assert answer.json() == json.loads(json.dumps(SUMMARY))
        assert answer.headers["X-Drift-Report-Id"] == str(newest)
        page = client.get("/v1/monitoring/drift/report", headers=admin)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "newest" in page.text

        # The HTML gone (another container, or pruned) and no MLflow copy: 404 that says so.
        (reports / "drift-b.html").unlink()
        body = error_of(client.get("/v1/monitoring/drift/report", headers=admin), 404)
        assert "/v1/monitoring/drift" in body["message"]
        engine.dispose()


def test_an_unmigrated_or_unreachable_store_is_503_not_500(
    registry: ServingRegistry, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/app.db"
    upgrade(url, "0002")  # before the drift reports' migration
    app = create_app(make_settings(registry, database_url=url, database_migrate_on_start=False))
    with TestClient(app, raise_server_exceptions=False) as client:
        admin = {"X-API-Key": grant_key(app, "admin")}
        body = error_of(client.get("/v1/monitoring/drift", headers=admin), 503)
        assert "unreachable" in body["message"]
