"""Pipeline commands of the ``carprice`` CLI (``data``, ``models``)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the pipeline's commands to the top-level ``carprice`` app."""
    from pipelines.cli.data import app as data_app
    from pipelines.cli.models import app as models_app

    app.add_typer(data_app, name="data")
    app.add_typer(models_app, name="models")
