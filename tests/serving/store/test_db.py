"""The serving database: migrations in code, models matching them, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
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
from serving.store.tables import ApiKey, Base, User, on_backend
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
    assert list((MIGRATIONS_DIR / "versions").glob("0004_*.py"))
    assert head_revision() == "0004"


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
            options = {
                "compare_type": True,
                "include_object": on_backend(connection.dialect.name),
            }
            context = MigrationContext.configure(connection, opts=options)
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


def _log_schema(url: str) -> tuple[dict[str, str], str | None]:
    """The prediction log's indexes (name -> access method or column list) and the collation
    of ``request_id`` as the database has them."""
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            if connection.dialect.name != "postgresql":
                found = inspect(connection).get_indexes("prediction_log")
                return {i["name"] or "": ",".join(map(str, i["column_names"])) for i in found}, None
            rows = connection.execute(
                text(
                    "SELECT c.relname, am.amname FROM pg_index i"
                    " JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam"
                    " WHERE i.indrelid = 'prediction_log'::regclass AND NOT i.indisunique"
                )
            )
            collation = connection.execute(
                text(
                    "SELECT collation_name FROM information_schema.columns"
                    " WHERE table_name = 'prediction_log' AND column_name = 'request_id'"
                )
            ).scalar_one()
            return {name: method for name, method in rows}, collation
    finally:
        engine.dispose()


def test_0004_brin_time_index_on_postgresql_only_and_back(empty_url: str) -> None:
    """0004: PostgreSQL's two btree time indexes become one BRIN index and request ids "C";
    SQLite keeps its btree indexes. Downgrading restores 0003's schema, with the rows."""
    upgrade(empty_url, "0003")
    old = _log_schema(empty_url)
    engine = create_db_engine(empty_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO prediction_log (request_id, row, logged_at, api_version,"
                    " model_name, model_version, caller, cached, price) VALUES ('r', 0,"
                    " :at, 'v1', 'car-price', '1', 'c', false, 1.0)"
                ),
                {"at": datetime.now(UTC)},
            )
        upgrade(empty_url)
        new = _log_schema(empty_url)
        downgrade(empty_url, "0003")
        assert _log_schema(empty_url) == old
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM prediction_log")).scalar() == 1
    finally:
        engine.dispose()
    if empty_url.startswith("postgresql"):
        assert old == (
            {
                "ix_prediction_log_logged_at": "btree",
                "ix_prediction_log_model_version_logged_at": "btree",
            },
            None,
        )
        assert new == ({"ix_prediction_log_logged_at": "brin"}, "C")
    else:
        assert (
            new
            == old
            == (
                {
                    "ix_prediction_log_logged_at": "logged_at",
                    "ix_prediction_log_model_version_logged_at": "model_version,logged_at",
                },
                None,
            )
        )


def test_the_tables_create_the_log_schema_the_migrations_do(empty_url: str, tmp_path: Path) -> None:
    """What autogenerate does not compare (index methods, collations): the ORM's tables, created
    directly, have the prediction log's indexes and collation the migrations give it."""
    upgrade(empty_url)
    with contextlib.ExitStack() as stack:
        if empty_url.startswith("postgresql"):
            direct_url = stack.enter_context(postgres_database())
        else:
            direct_url = f"sqlite:///{tmp_path}/direct.db"
        engine = create_db_engine(direct_url)
        try:
            Base.metadata.create_all(engine)
        finally:
            engine.dispose()
        assert _log_schema(direct_url) == _log_schema(empty_url)


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
