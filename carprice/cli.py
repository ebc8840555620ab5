"""The ``carprice`` command: one entry point for the pipeline's and the API's commands."""

from __future__ import annotations

from typing import Annotated

import typer

from pipelines.cli import register as register_pipelines
from serving.cli import register as register_serving

# Plain help (click's): no rich panels that print every flag as "<bool>", no markup to escape.
app = typer.Typer(
    help="Used-car price model: data, models, serving and access control.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
register_pipelines(app)
register_serving(app)


@app.command("traffic")
def traffic(
    url: Annotated[str, typer.Option(help="Base URL of a running API.")],
    api_key: Annotated[str, typer.Option(help="API key of the predict role.")],
    rate: Annotated[float, typer.Option(min=0.1, help="Requests per second.")] = 10.0,
    duration: Annotated[float, typer.Option(min=0.1, help="Seconds to send for.")] = 30.0,
    drift: Annotated[
        str,
        typer.Option(
            help="Shift features, e.g. 'year+5,km_driven*2,fuel_type=Electric:0.3' "
            "(:SHARE = that share of the cars only)."
        ),
    ] = "",
    feedback: Annotated[
        float,
        typer.Option(min=0, max=1, help="Share of priced cars whose true price is reported."),
    ] = 0.0,
    batch: Annotated[
        int, typer.Option(min=1, max=1000, help="Cars per request (>1: /v1/predict/batch).")
    ] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the generated cars.")] = 7,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight at most.")] = 16,
) -> None:
    """Send realistic cars from the project's generator to a running API (demos, tests)."""
    from carprice.traffic import SpecError, run

    try:
        summary = run(
            url,
            api_key,
            rate=rate,
            duration=duration,
            drift=drift,
            feedback=feedback,
            batch=batch,
            seed=seed,
            concurrency=concurrency,
        )
    except SpecError as exc:
        typer.echo(f"--drift: {exc}", err=True)
        raise typer.Exit(2) from None
    for line in summary.lines():
        typer.echo(line)
    if summary.ok == 0:
        typer.echo(f"no request succeeded against {url}", err=True)
        raise typer.Exit(1)
