"""Serving commands of the ``carprice`` CLI (``serve``, ``users``, ``keys``, ``db``,
``predictions``, ``feedback``, ``drift``, ``monitor``)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the serving commands to the top-level ``carprice`` app."""
    from serving.cli.users import db_app, keys_app, users_app

    app.add_typer(users_app, name="users")
    app.add_typer(keys_app, name="keys")
    app.add_typer(db_app, name="db")

    from serving.cli.feedback import feedback_app
    from serving.cli.predictions import predictions_app

    app.add_typer(predictions_app, name="predictions")
    app.add_typer(feedback_app, name="feedback")

    from serving.cli.serve import serve

    app.command("serve")(serve)

    from serving.cli.drift import drift_app
    from serving.cli.monitor import monitor

    app.add_typer(drift_app, name="drift")
    app.command("monitor")(monitor)
