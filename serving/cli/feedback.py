"""``carprice feedback import FILE.csv``: delayed real sale prices into the prediction log."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from serving.cli.logdb import fail, log_engine

if TYPE_CHECKING:
    from serving.store.predictions import Feedback

feedback_app = typer.Typer(help="Ground truth: the real sale prices of logged cars.")

_COLUMNS = ("request_id", "row", "actual_price")
_CHUNK = 5_000  # reports per transaction


def _reports(path: Path) -> Iterator[Feedback]:
    """The file's reports; a bad line is a one-line error naming it."""
    from serving.store.predictions import Feedback

    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in _COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise fail(f"{path.name}: no column {', '.join(missing)} (needs {','.join(_COLUMNS)})")
        for record in reader:
            line = reader.line_num
            request_id = (record["request_id"] or "").strip()
            if not request_id:
                raise fail(f"{path.name} line {line}: empty request_id")
            try:
                row = int(record["row"] or "0")
                if row < 0:
                    raise ValueError
            except ValueError:
                raise fail(f"{path.name} line {line}: row must be a whole number >= 0") from None
            try:
                yield Feedback(request_id, row, float(record["actual_price"] or "nan"))
            except ValueError:
                raise fail(
                    f"{path.name} line {line}: actual_price must be a positive finite number"
                ) from None


@feedback_app.command("import")
def import_feedback(
    file: Annotated[Path, typer.Argument(help="CSV with the columns request_id,row,actual_price.")],
) -> None:
    """Record real sale prices in bulk; reports how many matched a logged car, were unknown,
    and were duplicates (a car that already has a price keeps its first one)."""
    if not file.is_file():
        raise fail(f"{file}: no such file")
    from serving.store.predictions import record_feedback

    matched = unknown = duplicates = 0
    try:
        with log_engine() as engine:
            chunk: list[Feedback] = []
            for report in _reports(file):
                chunk.append(report)
                if len(chunk) == _CHUNK:
                    out = record_feedback(engine, chunk, all_or_nothing=False)
                    matched, unknown = matched + out.matched, unknown + len(out.unknown)
                    duplicates += len(out.duplicates)
                    chunk = []
            if chunk:
                out = record_feedback(engine, chunk, all_or_nothing=False)
                matched, unknown = matched + out.matched, unknown + len(out.unknown)
                duplicates += len(out.duplicates)
    except UnicodeDecodeError:
        raise fail(f"{file.name}: not a UTF-8 text file") from None
    typer.echo(f"matched {matched}, unknown {unknown}, duplicates {duplicates}")
