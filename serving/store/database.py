"""The serving database: engine and sessions, and the Alembic migrations run in code.

``open_database(url)`` is called in the FastAPI lifespan (never at import); ``upgrade(url)``
brings a database to the newest schema without an ``alembic.ini`` in the working directory.
"""

from __future__ import annotations

import fcntl
import hashlib
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, pool
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def _enable_sqlite_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    # SQLite ignores ON DELETE CASCADE unless each connection asks for it.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_db_engine(url: str, *, timeout: float | None = None) -> Engine:
    """An engine for ``url``: pre-pinged pool; SQLite with foreign keys on and thread-safe use.

    ``timeout`` (seconds) bounds a connection attempt and a statement on PostgreSQL (a server
    that accepts and never answers costs that, not forever) and SQLite's wait for a lock.
    """
    parsed = make_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() != "sqlite":
        kwargs["pool_pre_ping"] = True  # a server restart must not fail the next requests
        if timeout is not None and parsed.get_backend_name() == "postgresql":
            kwargs["connect_args"] = {
                "connect_timeout": max(1, round(timeout)),  # libpq counts whole seconds
                "options": f"-c statement_timeout={round(timeout * 1000)}",
            }
    else:
        kwargs["connect_args"] = {"check_same_thread": False}
        if timeout is not None:
            kwargs["connect_args"]["timeout"] = timeout
        if parsed.database in (None, "", ":memory:"):
            # One shared connection, or every thread would see its own empty database.
            kwargs["poolclass"] = pool.StaticPool
    engine = create_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _enable_sqlite_foreign_keys)
    return engine


@dataclass(frozen=True)
class Database:
    """An engine and its session factory; one per process, kept on ``app.state``."""

    engine: Engine
    sessions: sessionmaker[Session]

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on error."""
        with self.sessions.begin() as session:
            yield session

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def open_database(url: str, *, migrate: bool = False) -> Database:
    """Connect to ``url`` (and bring its schema to the newest revision if ``migrate``)."""
    engine = create_db_engine(url)
    if migrate:
        upgrade_engine(engine)
    return Database(engine=engine, sessions=sessionmaker(engine, expire_on_commit=False))


def alembic_config() -> Config:
    """Alembic's configuration, built in code: works from any working directory."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


# Alembic runs env.py through module-global proxies (alembic.context, alembic.op): two
# migrations in one process at once would trample each other. Across processes, env.py takes a
# PostgreSQL advisory lock.
_ALEMBIC_LOCK = threading.Lock()


@contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    # Workers starting at once on one SQLite file would race on CREATE TABLE (SQLite DDL is
    # not in the migration's transaction): an exclusive lock makes them take turns. The lock
    # file lives in the temp dir, named for the database's absolute path (processes sharing a
    # SQLite file share a machine), so nothing appears beside the database. (PostgreSQL: an
    # advisory lock in env.py.)
    database = engine.url.database
    if engine.url.get_backend_name() != "sqlite" or database in (None, "", ":memory:"):
        yield
        return
    assert database is not None
    digest = hashlib.sha256(str(Path(database).resolve()).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"carprice-migrate-{digest}.lock"
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def upgrade_engine(engine: Engine, revision: str = "head") -> None:
    """Apply the migrations up to ``revision`` through ``engine``."""
    config = alembic_config()
    with _ALEMBIC_LOCK, _sqlite_file_lock(engine), engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def upgrade(url: str, revision: str = "head") -> None:
    """Apply the migrations up to ``revision`` on the database at ``url``."""
    engine = create_db_engine(url)
    try:
        upgrade_engine(engine, revision)
    finally:
        engine.dispose()


def downgrade(url: str, revision: str) -> None:
    """Undo the migrations down to ``revision`` (``"base"`` empties the schema)."""
    engine = create_db_engine(url)
    config = alembic_config()
    try:
        with _ALEMBIC_LOCK, engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, revision)
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at (``None`` when never migrated)."""
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str | None:
    """The newest revision the shipped migrations define."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
