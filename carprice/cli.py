"""The ``carprice`` command: one entry point for the pipeline's and the API's commands."""

from __future__ import annotations

import typer

from pipelines.cli import app as data_app
from serving.cli import register as register_serving

app = typer.Typer(
    help="Used-car price model: data, serving and access control.", no_args_is_help=True
)
app.add_typer(data_app, name="data")

register_serving(app)
