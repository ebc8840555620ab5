"""Alembic environment of the serving database (users, API keys, later the prediction log).

Run through ``serving.store.database.upgrade()`` (start-up, ``carprice db upgrade``, tests),
which hands over
a live connection in ``config.attributes["connection"]``; or through the ``alembic`` command with
``serving/store/migrations/alembic.ini``, which takes the URL from the serving settings.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool, text

from serving.store.tables import Base, on_backend

# An arbitrary, fixed key: concurrent workers starting against one PostgreSQL database
# migrate one after the other instead of racing on CREATE TABLE.
_PG_MIGRATION_LOCK = 0x6361727072696365  # "carprice"


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things: batch mode rebuilds tables when a migration needs it.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=on_backend(connection.dialect.name),
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        context.run_migrations()


def _url() -> str:
    url = context.config.attributes.get("database_url") or context.config.get_main_option(
        "sqlalchemy.url"
    )
    if url:
        return str(url)
    from serving.settings import get_settings

    return get_settings().database_url


def run_migrations_offline() -> None:
    """Emit the SQL instead of running it (``alembic upgrade head --sql``)."""
    context.configure(url=_url(), target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the given connection, or on a fresh one to the configured URL."""
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
