"""``/v1/monitoring``: the newest drift report the monitor stored. ``admin`` only.

The API never computes a report (Evidently takes seconds to import and a report seconds to
compute): it serves what ``carprice monitor`` stored, the JSON from the database and the HTML
from the reports folder, or from the model version's MLflow run when this process does not
see that folder (another container).
"""

from __future__ import annotations

import functools
import logging
import tempfile
from pathlib import Path
from typing import Annotated, Any, cast

import anyio
from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from serving.access.principals import Role
from serving.api.deps import SettingsDep
from serving.api.schemas.errors import PROTECTED, ErrorResponse, error_responses
from serving.api.security import require_role
from serving.store import drift_reports
from serving.store.drift_reports import StoredReport

log = logging.getLogger(__name__)

NO_REPORT = (
    "no drift report stored yet for {model}: run `carprice monitor --interval S --port P` "
    "(it stores one every S seconds once enough predictions are logged), or "
    "`carprice drift report --out DIR` for a one-off report in DIR"
)

router = APIRouter(
    prefix="/v1/monitoring",
    tags=["monitoring"],
    dependencies=[Depends(require_role(Role.ADMIN))],
    responses=error_responses(*PROTECTED)
    | {404: {"model": ErrorResponse, "description": "No report stored yet (the message says how)"}},
)


async def get_monitoring_store(request: Request) -> Engine:
    """The engine of the database the monitor stores its reports in (the prediction log's)."""
    return cast(Engine, request.app.state.monitoring_store)


MonitoringStoreDep = Annotated[Engine, Depends(get_monitoring_store)]


async def _latest(engine: Engine, model: str) -> StoredReport:
    try:
        found = await anyio.to_thread.run_sync(drift_reports.latest, engine, model)
    except SQLAlchemyError as exc:
        log.warning("drift reports unreadable: %s", type(exc).__name__)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "the drift reports' database is unreachable"
        ) from None
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NO_REPORT.format(model=model))
    return found


def _headers(report: StoredReport) -> dict[str, str]:
    return {
        "X-Drift-Report-Id": str(report.id),
        "Last-Modified": report.created_at.strftime("%a, %d %b %Y %H:%M:%S GMT"),
    }


@router.get("/drift", response_class=JSONResponse)
async def latest_drift(engine: MonitoringStoreDep, settings: SettingsDep) -> JSONResponse:
    """The newest drift report's summary (drift.json: drift share, features, live MAE)."""
    report = await _latest(engine, settings.model_name)
    return JSONResponse(report.summary, headers=_headers(report))


def _html_from_mlflow(tracking_uri: str, run_id: str, artifact: str) -> str | None:
    import mlflow.artifacts

    with tempfile.TemporaryDirectory(prefix="carprice-drift-html-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=artifact, dst_path=tmp, tracking_uri=tracking_uri
            )
        except Exception as exc:  # unreachable or deleted: the caller answers 404
            log.warning("drift HTML not downloadable from MLflow: %s", type(exc).__name__)
            return None
        return Path(local).read_text(encoding="utf-8")


def _html(report: StoredReport, reports_dir: str, tracking_uri: str) -> str | None:
    if report.html_file is not None:
        path = Path(reports_dir) / Path(report.html_file).name
        try:
            return path.read_text(encoding="utf-8")
        except OSError:
            pass
    if report.mlflow_run_id and report.mlflow_artifact:
        return _html_from_mlflow(tracking_uri, report.mlflow_run_id, report.mlflow_artifact)
    return None


@router.get("/drift/report", response_class=HTMLResponse)
async def latest_drift_html(engine: MonitoringStoreDep, settings: SettingsDep) -> Any:
    """The newest drift report as Evidently's HTML page."""
    report = await _latest(engine, settings.model_name)
    html = await anyio.to_thread.run_sync(
        functools.partial(_html, report, settings.drift_reports_dir, settings.mlflow_tracking_uri)
    )
    if html is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"the HTML of drift report {report.id} is neither in {settings.drift_reports_dir} "
            "(CARPRICE_DRIFT_REPORTS_DIR) nor in MLflow: the JSON is at /v1/monitoring/drift; "
            "`carprice drift report --out DIR` writes a fresh HTML",
        )
    return HTMLResponse(html, headers=_headers(report))
