"""The monitor's drift reports in the database: store one, read the newest, list the history.

The one place that reads or writes ``drift_reports``. Written by ``carprice monitor``; read by
the API (``GET /v1/monitoring/drift``), which never computes a report itself. Every function
takes an :class:`~sqlalchemy.Engine` to the prediction log's database
(``Settings.prediction_log_database_url``), where the monitoring data lives.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Table, desc, insert, select

from serving.store.tables import DriftReportRecord, utcnow

_TABLE: Table = DriftReportRecord.__table__  # type: ignore[assignment]  # a Table at runtime


@dataclass(frozen=True, slots=True)
class StoredReport:
    """One stored report: the ``drift.json`` summary and where its HTML is."""

    id: int
    created_at: datetime
    model_name: str
    model_version: str
    summary: dict[str, Any]
    html_file: str | None
    mlflow_run_id: str | None
    mlflow_artifact: str | None


def save(
    engine: Engine,
    summary: dict[str, Any],
    *,
    html_file: str | None,
    mlflow_run_id: str | None = None,
    mlflow_artifact: str | None = None,
    created_at: datetime | None = None,
) -> int:
    """Store a report (``summary`` in the ``drift.json`` shape); returns its id."""
    values = {
        "created_at": created_at or utcnow(),
        "model_name": summary["model_name"],
        "model_version": str(summary["model_version"]),
        "dataset_drift": bool(summary["dataset_drift"]),
        "drift_share": float(summary["drift_share"]),
        "current_rows": int(summary["current_rows"]),
        "summary": summary,
        "html_file": html_file,
        "mlflow_run_id": mlflow_run_id,
        "mlflow_artifact": mlflow_artifact,
    }
    with engine.begin() as connection:
        result = connection.execute(insert(_TABLE).values(**values))
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])


def _stored(row: Any) -> StoredReport:
    return StoredReport(
        id=int(row.id),
        created_at=row.created_at,
        model_name=str(row.model_name),
        model_version=str(row.model_version),
        summary=dict(row.summary),
        html_file=row.html_file,
        mlflow_run_id=row.mlflow_run_id,
        mlflow_artifact=row.mlflow_artifact,
    )


def history(engine: Engine, model_name: str, *, limit: int = 100) -> list[StoredReport]:
    """The newest ``limit`` reports of ``model_name``, newest first."""
    query = (
        select(_TABLE)
        .where(_TABLE.c.model_name == model_name)
        .order_by(desc(_TABLE.c.created_at), desc(_TABLE.c.id))
        .limit(limit)
    )
    with engine.connect() as connection:
        return [_stored(row) for row in connection.execute(query)]


def latest(engine: Engine, model_name: str) -> StoredReport | None:
    """The newest report of ``model_name`` (``None`` when the monitor has stored none)."""
    found = history(engine, model_name, limit=1)
    return found[0] if found else None
