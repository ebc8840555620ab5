"""``carprice monitor``: a drift report every ``interval`` seconds, kept and exported.

Each run (:meth:`Monitor.run_once`) computes the report of the production version's newest
``window`` logged cars (:class:`~serving.monitoring.drift_job.DriftJob`) and then

1. sets the gauges (:mod:`serving.monitoring.drift_metrics`);
2. writes the HTML under the reports folder (the newest ``keep`` files are kept);
3. logs ``drift.html`` and ``drift.json`` as artifacts of the model version's MLflow run
   (``drift/<time>/``), and the drift share and live MAE as its metrics, so the MLflow UI
   shows the drift history beside the model;
4. stores the summary in the database (``drift_reports``): what the API serves;
5. adds the run to a local Evidently workspace, when one is configured.

Any step can fail (the database, MLflow or the log unreachable): the run is counted as
``failed`` with the reason logged, the gauges keep their last values, and the next run tries
again, so the monitor recovers by itself. A window with too few cars is ``skipped``.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Engine

from serving.monitoring import drift_metrics
from serving.monitoring.drift_job import DriftJob, TooFewRows
from serving.store import drift_reports
from serving.store.database import upgrade_engine
from serving.store.predictions import Window

if TYPE_CHECKING:
    from serving.monitoring.drift import DriftReport

log = logging.getLogger(__name__)

Outcome = Literal["ok", "skipped", "failed"]


def _reason(exc: BaseException) -> str:
    """A one-line reason for the log (never a traceback for an expected outage)."""
    message = getattr(exc, "message", None) or str(getattr(exc, "orig", None) or exc)
    first = message.strip().splitlines()[0] if message.strip() else ""
    return f"{type(exc).__name__}: {first[:300]}"


@dataclass
class Monitor:
    """Runs the drift report on a schedule and keeps every result."""

    job: DriftJob
    store: Engine
    """The database the reports are stored in (the prediction log's)."""
    reports_dir: Path
    window: int
    keep: int = 500
    tracking_uri: str | None = None
    """MLflow to log the reports to (``None``: not logged)."""
    workspace: Path | None = None
    migrate: bool = True
    """Bring the store's schema to the newest migration before the first report is stored
    (retried each run while the database is unreachable)."""
    _migrated: bool = False

    def run_once(self) -> Outcome:
        """One run; never raises for an outage (the outcome says what happened)."""
        try:
            report = self.job.run(Window(last=self.window))
        except TooFewRows as exc:
            log.info("drift report skipped: %s", exc.message)
            drift_metrics.RUNS.labels("skipped").inc()
            return "skipped"
        except Exception as exc:
            log.warning("drift report failed: %s", _reason(exc))
            drift_metrics.RUNS.labels("failed").inc()
            return "failed"
        drift_metrics.publish(report.summary)
        failures = self._keep(report)
        if failures:
            log.warning("drift report not fully stored: %s", "; ".join(failures))
            drift_metrics.RUNS.labels("failed").inc()
            return "failed"
        drift_metrics.RUNS.labels("ok").inc()
        drift_metrics.LAST_RUN.set(time.time())
        return "ok"

    def _keep(self, report: DriftReport) -> list[str]:
        """Store the report everywhere it goes; the reasons of the steps that failed."""
        failures: list[str] = []
        summary = report.summary
        now = datetime.now(UTC)
        stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
        version = str(summary["model_version"])
        html_file: str | None = f"drift-{summary['model_name']}-v{version}-{stamp}.html"
        try:
            self._write_html(str(html_file), report.html)
        except OSError as exc:
            failures.append(f"HTML not written to {self.reports_dir}: {_reason(exc)}")
            html_file = None
        run_id = artifact = None
        if self.tracking_uri is not None:
            try:
                run_id, artifact = self._log_to_mlflow(report, stamp)
            except Exception as exc:
                failures.append(f"not logged to MLflow: {_reason(exc)}")
        try:
            if self.migrate and not self._migrated:
                upgrade_engine(self.store)
                self._migrated = True
            drift_reports.save(
                self.store,
                summary,
                html_file=html_file,
                mlflow_run_id=run_id,
                mlflow_artifact=artifact,
                created_at=now,
            )
        except Exception as exc:
            failures.append(f"not stored in the database: {_reason(exc)}")
        if self.workspace is not None:
            try:
                self._add_to_workspace(report, summary, stamp)
            except Exception as exc:
                failures.append(f"not added to the Evidently workspace: {_reason(exc)}")
        return failures

    def _write_html(self, name: str, html: str) -> None:
        self.reports_dir.mkdir(parents=True, exist_ok=True)
        target = self.reports_dir / name
        partial = target.with_suffix(".html.partial")
        partial.write_text(html, encoding="utf-8")
        partial.replace(target)  # the API never serves a half-written file
        reports = sorted(self.reports_dir.glob("drift-*.html"))
        for old in reports[: max(0, len(reports) - self.keep)]:
            old.unlink(missing_ok=True)

    def _log_to_mlflow(self, report: DriftReport, stamp: str) -> tuple[str, str]:
        from mlflow import MlflowClient

        summary = report.summary
        info = self.job.version(str(summary["model_version"]))
        if info.run_id is None:
            raise ValueError(f"{info.name}/{info.version} has no MLflow run")
        client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        artifact = f"drift/{stamp}"
        with tempfile.TemporaryDirectory(prefix="carprice-drift-") as tmp:
            folder = Path(tmp)
            (folder / "drift.html").write_text(report.html, encoding="utf-8")
            (folder / "drift.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
            client.log_artifacts(info.run_id, str(folder), artifact_path=artifact)
        moment = int(time.time() * 1000)
        metrics: dict[str, Any] = {
            "monitor_drift_share": summary["drift_share"],
            "monitor_dataset_drift": 1.0 if summary["dataset_drift"] else 0.0,
        }
        if summary["regression"] and summary["regression"]["mae"] is not None:
            metrics["monitor_live_mae"] = summary["regression"]["mae"]
        for key, value in metrics.items():
            client.log_metric(info.run_id, key, float(value), timestamp=moment, step=moment // 1000)
        return info.run_id, f"{artifact}/drift.html"

    def _add_to_workspace(self, report: DriftReport, summary: dict[str, Any], stamp: str) -> None:
        from evidently.ui.workspace import Workspace

        assert self.workspace is not None
        workspace = Workspace.create(str(self.workspace))
        name = str(summary["model_name"])
        found = workspace.search_project(name)
        project = (
            found[0]
            if found
            else workspace.create_project(
                name, description=f"Drift of {name}'s served traffic (carprice monitor)"
            )
        )
        for snapshot in report.snapshots:
            workspace.add_run(project.id, snapshot, name=f"v{summary['model_version']} {stamp}")

    def run_forever(self, interval: float, stop: threading.Event) -> None:
        """Run every ``interval`` seconds (measured from each run's start) until ``stop``."""
        while not stop.is_set():
            started = time.monotonic()
            self.run_once()
            stop.wait(max(0.0, interval - (time.monotonic() - started)))
