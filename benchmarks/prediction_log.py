"""How fast the prediction log can be written to PostgreSQL: rows/s of the batched insert.

The API's writer (:mod:`serving.monitoring.prediction_log`) queues logged cars and inserts them
with :func:`serving.store.predictions.append` on the one connection it keeps, up to
``CARPRICE_PREDICTION_LOG_BATCH_ROWS`` (5,000) rows per transaction. This benchmark runs that
insert from 1, 2, 4 and 8 processes at once (as that many API workers would) into a fresh
database on the local server, for a few seconds each, and prints the rows/s they reach
together: the ceiling of logged cars per second, and what a replica's share of it is. The API
itself, the queue and the network are not in it.

Then what one logged car costs the database server (local only: read from the backend's
``/proc`` entry): the CPU of the backend per row over 30 ``COPY`` batches of 5,000 rows, 3
times, for the table as migrated and for copies of it without its indexes, down to a bare
heap with no index at all (the floor of one row per car; the BRIN index stays in every variant
but the last). On a machine whose cores the API shares with PostgreSQL, this is what logging
costs the API's throughput beyond the API's own work.

    python -m benchmarks.prediction_log [--seconds 4] [--url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import secrets
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from benchmarks.processes import PG_ADMIN, cpu_s

CAR: dict[str, Any] = {
    "brand": "Toyota", "model": "Corolla", "fuel_type": "Petrol", "transmission": "Manual",
    "body_type": "Sedan", "seller_type": "Dealer", "owner_type": "First", "color": "White",
    "year": 2019, "km_driven": 45000, "engine_cc": 1598, "max_power_bhp": 121.0,
    "mileage_kmpl": 17.5, "seats": 5, "torque_nm": 153.0, "doors": 4,
}  # fmt: skip


def records(batch: int) -> Any:
    """``batch`` logged cars as the writer hands them to ``append``: an Arrow table of
    ``LOGGED_SCHEMA``, one request per 10 cars."""
    import pyarrow as pa

    from serving.monitoring.request_context import new_request_id
    from serving.store.predictions import LOGGED_SCHEMA

    now = datetime.now(UTC)
    rows = []
    for i in range(batch):
        if i % 10 == 0:
            request_id = new_request_id()  # as the API makes them: time-ordered
        rows.append(
            {
                "request_id": request_id,
                "row": i % 10,
                "logged_at": now,
                "api_version": "v1",
                "model_name": "car-price",
                "model_version": "1",
                "price": 812345.0 + i,
                "cached": False,
                "caller": "bench",
                **CAR,
            }
        )
    return pa.Table.from_pylist(rows, schema=LOGGED_SCHEMA)


def writer(url: str, batch: int, seconds: float, ready: Any, start: Any, out: Any) -> None:
    from serving.store.database import create_db_engine
    from serving.store.predictions import append

    engine = create_db_engine(url)
    connection = engine.connect()  # kept between batches, as the API's writer keeps its own
    records(batch)  # imports done
    ready.put(True)
    start.wait()
    written, deadline = 0, time.perf_counter() + seconds
    began = time.perf_counter()
    while time.perf_counter() < deadline:
        chunk = records(batch)
        append(connection, chunk)
        written += chunk.num_rows
    out.put((written, time.perf_counter() - began))
    connection.close()
    engine.dispose()


def measure(url: str, writers: int, batch: int, seconds: float) -> float:
    ctx = mp.get_context("spawn")
    ready, start, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=writer, args=(url, batch, seconds, ready, start, out))
        for _ in range(writers)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:  # every writer has imported and built a batch: they all start together
        ready.get(timeout=300)
    start.set()
    results = [out.get(timeout=seconds + 120) for _ in procs]
    for proc in procs:
        proc.join()
    return float(sum(w for w, _ in results) / max(e for _, e in results))


_DROP_UNIQUE = "ALTER TABLE prediction_log DROP CONSTRAINT uq_prediction_log_request_id_row"
_DROP_ID = "ALTER TABLE prediction_log DROP COLUMN id"
FLOOR_VARIANTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("as migrated", ()),
    ("without the unique (request_id, row)", (_DROP_UNIQUE,)),
    ("without the id column (its key and sequence)", (_DROP_ID,)),
    ("without any index (the bare heap)",
     (_DROP_UNIQUE, _DROP_ID, "DROP INDEX ix_prediction_log_logged_at")),
)  # fmt: skip


def server_cpu_per_row(
    batches: int = 30, batch: int = 5000, repeats: int = 3
) -> list[tuple[str, list[float]]]:
    """Backend CPU (us) per logged row for each of :data:`FLOOR_VARIANTS`, ``repeats`` times
    (the variants taking turns), each time in a fresh database of the local server."""
    tables = [records(batch) for _ in range(batches + 1)]
    out: dict[str, list[float]] = {label: [] for label, _ in FLOOR_VARIANTS}
    for _ in range(repeats):
        for label, statements in FLOOR_VARIANTS:
            out[label].append(_server_cpu_per_row(statements, tables) / batch * 1e6)
    return list(out.items())


def _server_cpu_per_row(statements: tuple[str, ...], tables: list[Any]) -> float:
    """Backend CPU seconds per batch of ``tables[1:]`` after ``statements``, in a fresh
    database."""
    from serving.store.database import create_db_engine, upgrade
    from serving.store.predictions import append

    name = f"carprice_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        upgrade(url)
        engine = create_db_engine(url)
        with engine.connect() as connection:
            for statement in statements:
                connection.exec_driver_sql(statement)
            pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            connection.commit()
            append(connection, tables[0])  # warm: the first COPY, plans, caches
            before = cpu_s([pid])
            for table in tables[1:]:
                append(connection, table)
            spent = (cpu_s([pid]) - before) / (len(tables) - 1)
        engine.dispose()
        return spent
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--url", help="an existing database (default: a fresh one, dropped after)")
    args = parser.parse_args()
    name = None
    url = args.url
    if url is None:
        name = f"carprice_bench_{secrets.token_hex(4)}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        from serving.store.database import upgrade

        upgrade(url)
        print(f"{'writers':>7} {'batch':>6} {'rows/s':>9} {'rows/s per writer':>18}")
        for writers, batch in ((1, 100), (1, 1000), (1, 5000), (2, 5000), (4, 5000), (8, 5000)):
            rate = measure(url, writers, batch, args.seconds)
            print(f"{writers:>7} {batch:>6} {rate:>9,.0f} {rate / writers:>18,.0f}", flush=True)
    finally:
        if name is not None:
            with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print("\nPostgreSQL backend CPU per logged car (30 COPYs of 5,000 rows, local server;")
    print("least and median of 3 runs, the variants taking turns):")
    for label, runs in server_cpu_per_row():
        print(f"  {label:46} {min(runs):5.2f} / {statistics.median(runs):5.2f} us a row")


if __name__ == "__main__":
    main()
