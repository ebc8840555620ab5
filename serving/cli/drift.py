"""``carprice drift report``: an Evidently drift report of a window of the prediction log.

Exit status: 0 with a report; 3 with ``--fail-on-drift`` when the data set drifted (for cron
and CI); 2 for bad options or too few logged cars (no report is written); 1 when the registry
or the database cannot be read.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from serving.settings import Settings, get_settings

drift_app = typer.Typer(help="Drift of the served traffic from the training data (Evidently).")


def _settings() -> Settings:
    try:
        return get_settings()
    except ValidationError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def parse_time(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 time (``2026-12-01T10:00:00Z``); without an offset it is taken as UTC."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise _fail(
            f"{option} {value!r} is not an ISO 8601 time (2026-12-01T10:00:00Z)", 2
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


@drift_app.command("report")
def report(
    out: Annotated[Path, typer.Option(help="Folder to write drift.html and drift.json to.")],
    last: Annotated[
        int | None,
        typer.Option(min=1, help="The newest N logged cars (default CARPRICE_DRIFT_WINDOW_ROWS)."),
    ] = None,
    since: Annotated[str | None, typer.Option(help="Cars logged at or after this time.")] = None,
    until: Annotated[str | None, typer.Option(help="Cars logged before this time.")] = None,
    model_version: Annotated[
        str | None, typer.Option(help="Model version (default: the production alias's).")
    ] = None,
    fail_on_drift: Annotated[
        bool, typer.Option("--fail-on-drift", help="Exit 3 when the data set drifted.")
    ] = False,
) -> None:
    """Compare logged traffic with the model version's training reference (Evidently).

    Writes OUT/drift.html (Evidently's report) and OUT/drift.json (the summary: drift share,
    drifted features, per-feature scores, prediction drift, live MAE/RMSE/MAPE where feedback
    came).
    """
    settings = _settings()
    if last is not None and (since is not None or until is not None):
        raise _fail("give either --last or --since/--until, not both", 2)
    start, end = parse_time(since, "--since"), parse_time(until, "--until")
    if start and end and start >= end:
        raise _fail("--since must be before --until", 2)

    from sqlalchemy.exc import SQLAlchemyError

    from serving.errors import ServingError
    from serving.inference.registry import Registry
    from serving.monitoring.drift_job import DriftJob, TooFewRows
    from serving.store.database import create_db_engine
    from serving.store.predictions import Window

    which = (
        Window(since=start, until=end)
        if (start or end)
        else Window(last=last or settings.drift_window_rows)
    )
    engine = create_db_engine(
        settings.prediction_log_database_url, timeout=settings.prediction_log_timeout
    )
    job = DriftJob(
        Registry(settings.mlflow_tracking_uri, settings.model_name, settings.registry_timeout),
        engine,
        alias=settings.model_alias,
        window_rows=settings.drift_window_rows,
        min_rows=settings.drift_min_rows,
        drift_share=settings.drift_share,
    )
    try:
        result = job.run(which, model_version)
    except TooFewRows as exc:
        raise _fail(exc.message, 2) from None
    except ServingError as exc:
        raise _fail(exc.message, 1) from None
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise _fail(f"cannot read the prediction log: {detail}", 1) from None
    finally:
        engine.dispose()
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "drift.html").write_text(result.html, encoding="utf-8")
        text = json.dumps(result.summary, indent=2) + "\n"
        (out / "drift.json").write_text(text, encoding="utf-8")
    except OSError as exc:
        raise _fail(f"cannot write to {out}: {exc.strerror or exc}", 1) from None
    summary = result.summary
    drifted = ", ".join(summary["drifted_features"]) or "none"
    typer.echo(
        f"{summary['model_name']}/{summary['model_version']}: {summary['current_rows']} cars vs "
        f"{summary['reference_rows']} reference rows; drift share {summary['drift_share']:.3f} "
        f"(drifted: {drifted}); dataset drift: {'yes' if summary['dataset_drift'] else 'no'}"
    )
    if summary["regression"]:
        quality = summary["regression"]
        typer.echo(f"live MAE {quality['mae']:.1f} on {quality['rows']} cars with feedback")
    typer.echo(f"wrote {out / 'drift.html'} and {out / 'drift.json'}")
    if fail_on_drift and summary["dataset_drift"]:
        raise typer.Exit(3)
