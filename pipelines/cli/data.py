"""``carprice data ...``: commands for the raw data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Raw data: generate the synthetic listings.", no_args_is_help=True)


@app.command("sample")
def sample(
    rows: Annotated[int, typer.Option(min=1, help="Number of listings.")] = 20_000,
    seed: Annotated[
        int, typer.Option(help="Random seed; the same seed gives the same bytes.")
    ] = 42,
    out: Annotated[Path, typer.Option(help="CSV file to write.")] = Path("data/raw/cars.csv"),
) -> None:
    """Generate realistic synthetic used-car listings (formula: pipelines/synthetic.py)."""
    from pipelines.synthetic import write_sample

    write_sample(rows=rows, seed=seed, out=out)
    typer.echo(f"wrote {rows} listings to {out}")
