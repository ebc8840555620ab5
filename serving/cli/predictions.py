"""``carprice predictions export|stats|prune``: read and trim the prediction log."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from serving.cli.logdb import fail, log_engine, settings

if TYPE_CHECKING:
    from serving.store.predictions import Window

predictions_app = typer.Typer(help="The prediction log: export, counts, pruning.")

Last = Annotated[int | None, typer.Option(min=1, help="Only the newest N logged cars.")]
Since = Annotated[
    str | None, typer.Option(help="Logged at or after this ISO time/date (naive = UTC).")
]
Until = Annotated[str | None, typer.Option(help="Logged before this ISO time/date (naive = UTC).")]
ModelVersion = Annotated[str | None, typer.Option(help="Only this model version's cars.")]


def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise fail(f"--{name} {value!r} is not an ISO 8601 date or time") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _window(last: int | None, since: str | None, until: str | None, version: str | None) -> Window:
    from serving.store.predictions import Window

    try:
        return Window(last, _time(since, "since"), _time(until, "until"), version)
    except ValueError as exc:
        raise fail(str(exc).replace("last N rows", "--last N")) from None


@predictions_app.command("export")
def export(
    out: Annotated[Path, typer.Option(help="Output file: .csv or .parquet.")],
    last: Last = None,
    since: Since = None,
    until: Until = None,
    model_version: ModelVersion = None,
) -> None:
    """Write logged cars to a CSV or Parquet file (by its suffix), oldest first: request_id,
    row, logged_at, api_version, model_name, model_version, price, cached, caller, the 16
    features, actual_price (empty until feedback came)."""
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise fail(f"{out.name}: the file must end in .csv or .parquet")
    which = _window(last, since, until, model_version)
    if not out.parent.is_dir():
        raise fail(f"{out.parent} is not a directory")
    from serving.store.predictions import frame, window_chunks

    rows = 0
    with log_engine() as engine:
        chunks = window_chunks(engine, which)
        if suffix == ".csv":
            with out.open("w", newline="", encoding="utf-8") as handle:
                header = True
                for chunk in chunks:
                    chunk.to_csv(handle, index=False, header=header)
                    header, rows = False, rows + len(chunk)
                if header:
                    frame([]).to_csv(handle, index=False)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            writer: pq.ParquetWriter | None = None
            try:
                for chunk in chunks:
                    table = pa.Table.from_pandas(chunk, preserve_index=False)
                    writer = writer or pq.ParquetWriter(out, table.schema)
                    writer.write_table(table)
                    rows += len(chunk)
                if writer is None:
                    pq.write_table(pa.Table.from_pandas(frame([]), preserve_index=False), out)
            finally:
                if writer is not None:
                    writer.close()
    typer.echo(f"wrote {rows} logged cars to {out}")


@predictions_app.command("stats")
def stats(
    since: Since = None,
    until: Until = None,
    model_version: ModelVersion = None,
) -> None:
    """Logged cars by model version and UTC day, with how many got their real price."""
    from serving.store import predictions

    which = _window(None, since, until, model_version)
    with log_engine() as engine:
        counts = predictions.stats(engine, which)
    typer.echo(f"{'model_version':<14} {'day':<10} {'predictions':>12} {'with_feedback':>14}")
    for c in counts:
        typer.echo(f"{c.model_version:<14} {c.day:<10} {c.predictions:>12} {c.with_feedback:>14}")
    total = sum(c.predictions for c in counts)
    typer.echo(f"{len(counts)} version-days, {total} logged cars")


@predictions_app.command("prune")
def prune(
    older_than: Annotated[
        float | None,
        typer.Option(
            "--older-than",
            help="Delete cars logged more than DAYS days ago "
            "(default: CARPRICE_PREDICTION_LOG_RETENTION_DAYS).",
            metavar="DAYS",
        ),
    ] = None,
) -> None:
    """Delete old logged cars, keeping the table bounded (run it daily, e.g. from cron)."""
    from serving.store import predictions

    days = older_than if older_than is not None else settings().prediction_log_retention_days
    if days is None:
        raise fail("give --older-than DAYS or set CARPRICE_PREDICTION_LOG_RETENTION_DAYS")
    if not days > 0:
        raise fail(f"--older-than must be a positive number of days, got {days:g}")
    with log_engine() as engine:
        deleted = predictions.prune(engine, days)
    typer.echo(f"deleted {deleted} logged cars older than {days:g} days")
