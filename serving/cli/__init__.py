"""Serving commands of the ``carprice`` CLI (``serve``, ``users``, ``keys``)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the serving commands to the top-level ``carprice`` app."""
    from serving.cli.users import db_app, keys_app, users_app

    app.add_typer(users_app, name="users")
    app.add_typer(keys_app, name="keys")
    app.add_typer(db_app, name="db")

    from serving.cli.serve import serve

    app.command("serve")(serve)
