"""The serving database: migrations in code, models matching them, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text

from serving.store.database import (
    MIGRATIONS_DIR,
    create_db_engine,
    current_revision,
    downgrade,
    head_revision,
    open_database,
    upgrade,
)
from serving.store.tables import ApiKey, Base, User
from tests.serving.services import postgres_database


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/serving.store.database"
    else:
        with postgres_database() as url:
            yield url


def test_migrations_ship_with_the_package() -> None:
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()
    assert list((MIGRATIONS_DIR / "versions").glob("0001_*.py"))
    assert list((MIGRATIONS_DIR / "versions").glob("0002_*.py"))
    assert list((MIGRATIONS_DIR / "versions").glob("0003_*.py"))
    assert head_revision() == "0003"


def test_upgrade_from_empty(empty_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(Path("/"))  # no alembic.ini in the working directory
    assert current_revision(empty_url) is None
    upgrade(empty_url)
    assert current_revision(empty_url) == head_revision()
    engine = create_db_engine(empty_url)
    try:
        assert {"users", "api_keys", "prediction_log", "alembic_version"} <= set(
            inspect(engine).get_table_names()
        )
    finally:
        engine.dispose()
    upgrade(empty_url)  # idempotent
    assert current_revision(empty_url) == head_revision()


def test_models_match_the_migrations(empty_url: str) -> None:
    """What autogenerate would write after the last migration: nothing."""
    upgrade(empty_url)
    engine = create_db_engine(empty_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_downgrade_to_base_and_back(empty_url: str) -> None:
    upgrade(empty_url)
    downgrade(empty_url, "base")
    engine = create_db_engine(empty_url)
    try:
        assert not {"users", "api_keys", "prediction_log"} & set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    upgrade(empty_url)
    assert current_revision(empty_url) == head_revision()


def test_deleting_a_user_deletes_their_keys_and_times_are_utc(empty_url: str) -> None:
    db = open_database(empty_url, migrate=True)
    try:
        with db.session() as session:
            user = User(username="ann", password_hash="x", role="predict")
            session.add(user)
            session.flush()
            session.add(ApiKey(user_id=user.id, prefix="0123456789", secret_hash="h"))
        with db.session() as session:
            key = session.scalars(select(ApiKey)).one()
            assert key.created_at.tzinfo == UTC
            assert abs((datetime.now(UTC) - key.created_at).total_seconds()) < 60
            # Plain SQL, not the ORM cascade: the database enforces it (SQLite included).
            session.execute(text("DELETE FROM users WHERE username = 'ann'"))
        with db.session() as session:
            assert session.scalars(select(ApiKey)).all() == []
    finally:
        db.close()


def test_role_is_constrained(empty_url: str) -> None:
    from sqlalchemy.exc import IntegrityError

    db = open_database(empty_url, migrate=True)
    try:
        with pytest.raises(IntegrityError), db.session() as session:
            session.add(User(username="eve", password_hash="x", role="root"))
    finally:
        db.close()


def test_in_memory_sqlite_is_one_database_across_threads() -> None:
    db = open_database("sqlite://", migrate=True)
    try:
        with db.session() as session:
            session.add(User(username="t", password_hash="x", role="admin"))
        seen: list[int] = []

        def count() -> None:
            with db.session() as session:
                seen.append(len(session.scalars(select(User)).all()))

        thread = threading.Thread(target=count)
        thread.start()
        thread.join()
        assert seen == [1]
    finally:
        db.close()


def test_concurrent_start_ups_migrate_once(empty_url: str) -> None:
    """Workers starting at once against one database: no CREATE TABLE race."""
    code = "import sys; from serving.store.database import upgrade; upgrade(sys.argv[1])"
    workers = [
        subprocess.Popen([sys.executable, "-c", code, empty_url], stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    failures = [w.stderr.read().decode() for w in workers if w.wait(60) != 0 and w.stderr]
    assert failures == []
    assert current_revision(empty_url) == head_revision()


def test_migrations_in_threads_of_one_process_are_serialised(tmp_path: Path) -> None:
    urls = [f"sqlite:///{tmp_path}/t{i}.db" for i in range(4)]
    errors: list[BaseException] = []

    def start(url: str) -> None:
        try:
            upgrade(url)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(url,)) for url in urls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert {current_revision(url) for url in urls} == {head_revision()}
