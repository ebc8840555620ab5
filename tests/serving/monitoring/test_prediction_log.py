"""The prediction log's queue and writer against real SQLite and PostgreSQL, and a database that
goes away: a TCP proxy in front of the real PostgreSQL that can swallow connections (accepts,
never answers) and later pass them on again."""

from __future__ import annotations

import contextlib
import gc
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import event

from serving.inference.features import FEATURE_NAMES, Row, make_row
from serving.monitoring.prediction_log import PredictionLog
from serving.store import predictions
from serving.store.database import create_db_engine, upgrade, upgrade_engine
from serving.store.predictions import Window
from tests.serving.services import postgres_database

CAR = make_row(
    {
        "brand": "Toyota",
        "model": "Corolla",
        "fuel_type": "Petrol",
        "transmission": "Manual",
        "seller_type": "Dealer",
        "year": 2019,
        "km_driven": 42000,
        "doors": 4,
        "torque_nm": 140.5,
    }
)


def record(
    log: PredictionLog, request_id: str, n: int = 1, api_version: str = "v1", car: Row = CAR
) -> bool:
    return log.record(
        request_id=request_id,
        api_version=api_version,
        caller="key:7",
        model_name="car-price",
        model_version="3",
        columns=[[car[name]] * n for name in FEATURE_NAMES],
        prices=[1000.0 + i for i in range(n)],
        cached=[i % 2 == 0 for i in range(n)],
    )


def wait_for(condition: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/log.db"
    else:
        with postgres_database() as pg:
            yield pg


def test_every_car_is_written_with_its_request(url: str) -> None:
    engine = create_db_engine(url, timeout=5)
    log = PredictionLog(engine, queue_max=10_000, batch_rows=500, flush_interval=0.05, migrate=True)
    log.start()
    try:
        assert record(log, "one")
        assert record(log, "batch", n=1000, api_version="v2")
        assert log.close(timeout=30)
        df = predictions.window(engine, Window())
    finally:
        engine.dispose()
    assert len(df) == 1001
    assert log.written == 1001
    one = df[df.request_id == "one"].iloc[0]
    assert (one.row, one.api_version, one.caller, one.model_version) == (0, "v1", "key:7", "3")
    assert (one.year, one.km_driven, one.torque_nm, one.price, one.cached) == (
        2019,
        42000,
        140.5,
        1000.0,
        True,
    )
    assert one.body_type is pd_na()
    batch = df[df.request_id == "batch"]
    assert batch.row.tolist() == list(range(1000))
    assert set(batch.api_version) == {"v2"}
    assert batch.price.tolist()[999] == 1999.0


def test_columns_as_arrays_nan_is_missing_and_a_refused_car_blocks_nothing(url: str) -> None:
    """Feature columns may be NumPy arrays (NaN = missing); text PostgreSQL cannot hold (NUL) is
    logged with U+FFFD; a batch the database refuses is dropped and counted, never retried."""
    engine = create_db_engine(url, timeout=5)
    upgrade_engine(engine)
    log = PredictionLog(engine, queue_max=10_000, batch_rows=500, flush_interval=0.05)
    log.start()
    try:
        columns: list[object] = [[CAR[name]] * 2 for name in FEATURE_NAMES]
        columns[FEATURE_NAMES.index("torque_nm")] = np.array([150.0, np.nan])
        columns[FEATURE_NAMES.index("year")] = np.array([2018.0, 2019.0])
        assert log.record(
            request_id="arrays",
            api_version="v2",
            caller="ann",
            model_name="car-price",
            model_version="3",
            columns=columns,
            prices=np.array([1.5, 2.5]),
            cached=[False, True],
        )
        assert record(log, "nul", car=CAR | {"brand": "Toy\x00ota"})
        wait_for(lambda: log.written == 3)
        # A value out of its column's range: refused, dropped, counted; the log goes on.
        assert record(log, "huge", car=CAR | {"km_driven": 1e12})
        wait_for(lambda: log.written + log.dropped == 4)
        assert record(log, "after")
        assert log.close(timeout=30)
        df = predictions.window(engine, Window())
    finally:
        engine.dispose()
    arrays = df[df.request_id == "arrays"]
    assert arrays.torque_nm.tolist()[0] == 150.0
    assert np.isnan(arrays.torque_nm.tolist()[1])
    assert arrays.year.tolist() == [2018, 2019]
    assert arrays.price.tolist() == [1.5, 2.5]
    assert arrays.cached.tolist() == [False, True]
    assert set(df.request_id) >= {"arrays", "nul", "after"}
    brand = df[df.request_id == "nul"].brand.iloc[0]
    assert brand in ("Toy\x00ota", "Toy\ufffdota")  # SQLite keeps NUL; PostgreSQL cannot
    if url.startswith("postgresql"):
        assert (log.dropped, log.write_errors) == (1, 1)
        assert "huge" not in set(df.request_id)


@pytest.mark.postgres
def test_logged_at_is_the_request_time_whatever_the_database_time_zone() -> None:
    # The COPY sends naive UTC timestamps and reads them in UTC (SET LOCAL): a database whose
    # default zone is another must not shift them.
    with postgres_database() as pg:
        engine = create_db_engine(pg, timeout=5)
        with engine.begin() as connection:
            name = connection.exec_driver_sql("SELECT current_database()").scalar_one()
            connection.exec_driver_sql(f"ALTER DATABASE \"{name}\" SET TimeZone = 'Asia/Kolkata'")
        engine.dispose()  # new connections take the database's zone
        engine = create_db_engine(pg, timeout=5)
        try:
            with engine.connect() as connection:
                zone = connection.exec_driver_sql("SHOW TimeZone").scalar_one()
            assert zone == "Asia/Kolkata"
            log = PredictionLog(engine, queue_max=100, batch_rows=10, flush_interval=0.05,
                                migrate=True)  # fmt: skip
            log.start()
            before = datetime.now(UTC)
            assert record(log, "zoned")
            after = datetime.now(UTC)
            assert log.close(timeout=30)
            df = predictions.window(engine, Window())
        finally:
            engine.dispose()
    logged = df.logged_at.iloc[0].to_pydatetime()
    assert before - timedelta(milliseconds=1) <= logged <= after + timedelta(milliseconds=1)


def test_the_writer_keeps_one_connection_between_batches(url: str) -> None:
    # A checkout of the API's engine pre-pings (a SELECT 1 round trip): once, not per batch.
    engine = create_db_engine(url, timeout=5)
    upgrade_engine(engine)
    checkouts: list[object] = []
    event.listen(engine, "checkout", lambda *args: checkouts.append(args))
    log = PredictionLog(engine, queue_max=10_000, batch_rows=5, flush_interval=0.01)
    log.start()
    try:
        for i in range(6):
            assert record(log, f"r{i}", n=5)
            wait_for(lambda i=i: log.written == 5 * (i + 1))
        assert log.close(timeout=30)
    finally:
        engine.dispose()
    assert len(checkouts) == 1
    assert log.write_errors == 0


@pytest.mark.postgres
def test_a_kept_connection_lost_between_batches_is_replaced_at_once() -> None:
    """A restart between batches (here: the writer's backend terminated) costs no failed write:
    the batch goes in on a new connection, as with a pre-ping at every checkout."""
    with postgres_database() as pg:
        engine = create_db_engine(pg, timeout=5)
        upgrade_engine(engine)
        log = PredictionLog(engine, queue_max=100, batch_rows=1, flush_interval=0.01)
        log.start()
        try:
            assert record(log, "before")
            wait_for(lambda: log.written == 1)
            with engine.connect() as connection:
                killed = connection.exec_driver_sql(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).scalar_one()
            assert killed == 1  # the writer's kept connection
            assert record(log, "after")
            wait_for(lambda: log.written == 2)
            assert log.close(timeout=30)
            logged = predictions.window(engine, Window()).request_id.tolist()
        finally:
            engine.dispose()
    assert logged == ["before", "after"]
    assert log.write_errors == 0


def test_the_logged_schema_is_the_logged_columns() -> None:
    assert tuple(predictions.LOGGED_SCHEMA.names) == predictions.LOGGED_COLUMNS


def pd_na() -> object:
    import pandas as pd

    return pd.NA


def test_a_full_queue_drops_and_counts_never_blocks(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/log.db"
    upgrade(url)
    engine = create_db_engine(url)
    log = PredictionLog(engine, queue_max=10, batch_rows=5, flush_interval=0.05)
    # Not started: nothing drains the queue.
    assert record(log, "a", n=6)
    assert record(log, "b", n=4)
    started = time.perf_counter()
    assert not record(log, "c", n=1)
    assert not record(log, "d", n=3)
    assert time.perf_counter() - started < 0.05
    assert (log.depth, log.dropped) == (10, 4)
    log.start()
    assert log.close(timeout=10)
    assert sorted(set(predictions.window(engine, Window()).request_id)) == ["a", "b"]
    engine.dispose()


def test_queued_requests_add_no_container_for_the_garbage_collector(tmp_path: Path) -> None:
    # Queued as containers of their own, every request's reached the old generation and forced
    # full collections of the worker's heap every few seconds (the p99 tail under load). Their
    # cars are appended to the queue's columns instead: str and float are not followed.
    url = f"sqlite:///{tmp_path}/log.db"
    upgrade(url)
    engine = create_db_engine(url)
    log = PredictionLog(engine, queue_max=10_000, batch_rows=5_000, flush_interval=0.05)
    columns = [[CAR[name]] for name in FEATURE_NAMES]
    record(log, "warm-up")  # the open segment's own lists
    gc.disable()
    try:
        before = len(gc.get_objects())
        for i in range(1000):
            assert log.record(request_id=f"r{i}", api_version="v1", caller="key:7",
                              model_name="car-price", model_version="3", columns=columns,
                              prices=[1.0], cached=[False])  # fmt: skip
        assert log.record(request_id="arrays", api_version="v2", caller="key:7",
                          model_name="car-price", model_version="3",
                          columns=[np.full(2, np.nan)] * len(FEATURE_NAMES),
                          prices=np.array([1.0, 2.0]), cached=[False, False])  # fmt: skip
        grown = len(gc.get_objects()) - before
    finally:
        gc.enable()
    assert grown < 50  # (a container per request would be 1,000 or more)
    assert log.depth == 1003
    log.start()
    assert log.close(timeout=10)
    df = predictions.window(engine, Window())
    engine.dispose()
    assert len(df) == 1003
    assert df.request_id.tolist()[:3] == ["warm-up", "r0", "r1"]
    assert df.row.tolist()[-2:] == [0, 1]


def test_segments_hold_about_batch_rows_and_keep_request_order(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/log.db"
    upgrade(url)
    engine = create_db_engine(url)
    log = PredictionLog(engine, queue_max=10_000, batch_rows=10, flush_interval=0.05)
    for i in range(7):
        assert record(log, f"r{i}", n=4)
    # A request opens a new segment once the open one holds batch_rows cars: 12, 12, 4.
    assert [segment.cars for segment in log._queue] == [12, 12, 4]
    log.start()
    assert log.close(timeout=10)
    df = predictions.window(engine, Window())
    engine.dispose()
    assert log.written == 28
    assert df.request_id.tolist() == [f"r{i}" for i in range(7) for _ in range(4)]
    assert df.row.tolist() == [0, 1, 2, 3] * 7
    assert df.price.tolist() == [1000.0, 1001.0, 1002.0, 1003.0] * 7


class SwitchableProxy:
    """A TCP proxy to ``target``: ``up`` passes connections on; ``down`` accepts them and never
    answers (a database that hangs), the worst case for a client."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.up = False
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self._held: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.up:
                self._held.append(client)  # accepted, never answered
                continue
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self.server.close()
        for s in self._held:
            s.close()


@pytest.mark.postgres
def test_an_unreachable_database_costs_requests_nothing_and_logging_resumes() -> None:
    with postgres_database() as pg:
        upgrade(pg)
        proxy = SwitchableProxy(("127.0.0.1", 5432))
        url = pg.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        engine = create_db_engine(url, timeout=1)
        log = PredictionLog(engine, queue_max=50, batch_rows=10, flush_interval=0.05)
        log.start()
        try:
            worst = 0.0
            for i in range(80):  # the database hangs: every record() returns at once
                started = time.perf_counter()
                record(log, f"down-{i}")
                worst = max(worst, time.perf_counter() - started)
            assert worst < 0.05  # a lock and a deque append (plus the first warning line)
            wait_for(lambda: log.write_errors >= 1)
            assert log.dropped == 30  # 50 queued, the rest dropped and counted
            proxy.up = True  # the database is back: the queued cars go in by themselves
            wait_for(lambda: log.written == 50, timeout=30)
            assert record(log, "after")
            assert log.close(timeout=10)
            logged = set(predictions.window(engine, Window()).request_id)
        finally:
            engine.dispose()
            proxy.close()
    assert logged == {f"down-{i}" for i in range(50)} | {"after"}
