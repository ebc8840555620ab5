"""Serving commands of the ``carprice`` CLI (``serve``, ``users``, ``keys``)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the serving commands to the top-level ``carprice`` app."""
