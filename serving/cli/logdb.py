"""The prediction log's database for the ``carprice predictions|feedback`` commands.

One place that opens it (``CARPRICE_PREDICTION_LOG_URL``, else ``CARPRICE_DATABASE_URL``),
migrates it when ``CARPRICE_DATABASE_MIGRATE_ON_START`` is on, and turns a database that is
down into a one-line error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer
from pydantic import ValidationError

from serving.settings import Settings, get_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine


def settings() -> Settings:
    """The settings, or a one-line configuration error (exit 2)."""
    try:
        return get_settings()
    except ValidationError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` to stderr; the exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@contextmanager
def log_engine() -> Iterator[Engine]:
    """An engine to the prediction log (migrated first when start-up migrations are on)."""
    # Imported here: SQLAlchemy and Alembic would slow down every other `carprice` command.
    from sqlalchemy.exc import SQLAlchemyError

    from serving.store.database import create_db_engine, upgrade_engine

    config = settings()
    engine = create_db_engine(
        config.prediction_log_database_url, timeout=config.prediction_log_timeout
    )
    try:
        if config.database_migrate_on_start:
            upgrade_engine(engine)
        yield engine
    except SQLAlchemyError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise fail(f"the prediction log database failed: {first}") from None
    finally:
        engine.dispose()
