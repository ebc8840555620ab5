"""The settings as the CLI reads them: a bad value is one line naming the variable, exit 2."""

from __future__ import annotations

import typer
from pydantic import ValidationError
from pydantic_settings.exceptions import SettingsError

from serving.settings import Settings, describe_errors, get_settings


def load_settings() -> Settings:
    """The environment's settings, or a one-line ``configuration error: ...`` and exit code 2."""
    try:
        return get_settings()
    except (ValidationError, SettingsError) as exc:
        typer.echo(f"configuration error: {describe_errors(exc)}", err=True)
        raise typer.Exit(2) from None
