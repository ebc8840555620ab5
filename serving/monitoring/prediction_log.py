"""The prediction log's writer: a bounded in-process queue and one thread writing it in batches.

:meth:`PredictionLog.record` is called by the prediction service once per answered request,
with the request's cars column by column. It appends them to the queued columns (one
``list.extend`` per column) under a lock held for about a microsecond: no per-car Python, no
container kept per request (:class:`_Segment`), and a request never waits on the database. The
writer thread turns a segment of queued requests (about ``batch_rows`` cars) into one Arrow
table with one conversion per column and writes it in one statement
(:func:`serving.store.predictions.append`: one ``COPY`` on PostgreSQL).

Failure: a batch that cannot be written because the database is away stays at the head of the
queue and is retried with a growing pause (0.25 s up to 5 s; every attempt bounded by the
engine's connect and statement timeouts), so logging resumes by itself when the database is
back. The writer keeps one connection between batches: the engine's pre-ping (a ``SELECT 1``
round trip at every checkout, what the API's other uses of the engine want) is paid only when
the writer (re)connects; a kept connection found broken (a database restart) is replaced and
the batch written on the new one at once, as the pre-ping would have.

While the database is away the queue fills; once ``queue_max`` cars are waiting, new ones are
dropped, counted (``carprice_prediction_log_rows_dropped_total``) and reported in a warning at
most every 10 s. A batch the database refuses for what it holds (a retry cannot help) is
dropped and counted the same way instead of blocking the log.

Shutdown: :meth:`close` (in the lifespan's shutdown, after uvicorn has answered every in-flight
request) stops taking entries and waits for the writer to drain the queue.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from sqlalchemy import Connection, Engine

from serving.inference.features import FEATURES
from serving.monitoring.metrics import (
    LOG_QUEUE_DEPTH,
    LOG_ROWS_DROPPED,
    LOG_ROWS_WRITTEN,
    LOG_WRITE_ERRORS,
)
from serving.store import predictions
from serving.store.database import upgrade_engine

log = logging.getLogger(__name__)

_RETRY_FIRST, _RETRY_MAX = 0.25, 5.0
_WARN_EVERY = 10.0
_TYPES = tuple(predictions.LOGGED_SCHEMA.field(f.name).type for f in FEATURES)

Column = Sequence[Any]
"""One feature's values for every car of a request: ``str``/``float``/``None`` (a list or a
NumPy array; in a float array NaN means missing)."""


class _Segment:
    """Queued requests, held as the columns of the table they become: each request's cars are
    appended to one list per column (``list.extend``: C speed, no per-car work), its own values
    once to the per-request lists.

    Why columns and not an entry per request: a queued request lives ~flush_interval seconds.
    Held as containers of its own (lists, tuples of columns), every request's ~20 containers
    were followed by the garbage collector, and (as lists) survived into the old generation,
    which then filled fast enough to force a full collection every few seconds (300-600 ms each
    with the worker's heap, measured under load: the p99 tail); the writer then spent ~3 us a
    one-car request taking them apart again. Here a request adds no container at all (str and
    float are not followed), and the writer converts each column with one call.
    """

    __slots__ = ("api_versions", "cached", "callers", "cars", "columns", "counts",
                 "model_names", "model_versions", "prices", "request_ids", "times")  # fmt: skip

    def __init__(self) -> None:
        self.cars = 0
        self.request_ids: list[str] = []
        self.api_versions: list[str] = []
        self.callers: list[str] = []
        self.model_names: list[str] = []
        self.model_versions: list[str] = []
        self.times: list[float] = []
        self.counts: list[int] = []
        self.columns: list[list[Any]] = [[] for _ in FEATURES]
        self.prices: list[float] = []
        self.cached: list[bool] = []


def _column(values: list[Any], kind: pa.DataType) -> pa.Array:
    """One feature column of a batch as an Arrow array (NaN and None are null)."""
    if kind == pa.int64():  # the API accepts only whole numbers there; NaN/None -> null
        return pa.array(values, pa.float64(), from_pandas=True).cast(kind, safe=False)
    return pa.array(values, kind, from_pandas=True)


def batch_table(segment: _Segment) -> pa.Table:
    """Queued requests as one table of logged cars
    (:data:`~serving.store.predictions.LOGGED_SCHEMA`), built with bulk conversions only."""
    sizes = np.asarray(segment.counts, dtype=np.int64)
    which = np.repeat(np.arange(len(sizes)), sizes)  # request of each car
    starts = np.cumsum(sizes) - sizes
    micros = (np.asarray(segment.times) * 1e6).astype(np.int64)

    def per_request(values: list[str]) -> pa.Array:
        return pa.array(values, pa.string()).take(which)

    arrays = [
        per_request(segment.request_ids),
        pa.array(np.arange(len(which)) - starts[which], pa.int64()),
        pa.array(micros[which], pa.timestamp("us", tz="UTC")),
        per_request(segment.api_versions),
        per_request(segment.model_names),
        per_request(segment.model_versions),
        pa.array(segment.prices, pa.float64()),
        pa.array(segment.cached, pa.bool_()),
        per_request(segment.callers),
        *(_column(values, kind) for values, kind in zip(segment.columns, _TYPES, strict=True)),
    ]
    return pa.Table.from_arrays(arrays, schema=predictions.LOGGED_SCHEMA)


class PredictionLog:
    """The queue and the writer thread of one worker process (kept on ``app.state``)."""

    def __init__(
        self,
        engine: Engine,
        *,
        queue_max: int,
        batch_rows: int,
        flush_interval: float,
        migrate: bool = False,
    ) -> None:
        self.engine = engine
        self.queue_max = queue_max
        self.batch_rows = batch_rows
        self.flush_interval = flush_interval
        self._migrate = migrate
        self._queue: deque[_Segment] = deque()  # the last one is _open, while it is
        self._open: _Segment | None = None
        self._lock = threading.Lock()
        self._pending = 0  # cars queued or being written, under _lock
        self._accepting = True
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connection: Connection | None = None  # the writer thread's, kept between batches
        self._dropped_unreported = 0
        self._last_warning = 0.0
        self.written = 0
        self.dropped = 0
        self.write_errors = 0

    # --- the request side ---

    def record(
        self,
        *,
        request_id: str,
        api_version: str,
        caller: str,
        model_name: str,
        model_version: str,
        columns: Sequence[Column],
        prices: Sequence[float],
        cached: Sequence[bool],
    ) -> bool:
        """Queue one answered request's cars; False (and counted) when they were dropped.

        ``columns`` holds the 16 feature columns in :data:`~serving.inference.features.FEATURES`
        order, each with one value per car (see :data:`Column`); ``prices`` and ``cached`` one
        per car. They are appended to the queued columns (see :class:`_Segment`) under a lock
        held for about a microsecond.
        """
        n = len(prices)
        now = time.time()
        with self._lock:
            accepted = self._accepting and self._pending + n <= self.queue_max
            if accepted:
                segment = self._open
                if segment is None or segment.cars >= self.batch_rows:
                    segment = self._open = _Segment()
                    self._queue.append(segment)
                segment.request_ids.append(request_id)
                segment.api_versions.append(api_version)
                segment.callers.append(caller)
                segment.model_names.append(model_name)
                segment.model_versions.append(model_version)
                segment.times.append(now)
                segment.counts.append(n)
                # A NumPy array's items are NumPy scalars here: not followed either, and Arrow
                # reads them (NaN as null).
                for into, values in zip(segment.columns, columns, strict=True):
                    into.extend(values)
                segment.prices.extend(prices)
                segment.cached.extend(cached)
                segment.cars += n
                self._pending += n
                full = self._pending >= self.batch_rows
        if not accepted:
            self._drop(n)
        elif full:
            self._wake.set()
        return accepted

    def _drop(self, n: int, reason: str = "queue full") -> None:
        LOG_ROWS_DROPPED.inc(n)
        now = time.monotonic()
        with self._lock:
            self.dropped += n
            self._dropped_unreported += n
            if now - self._last_warning < _WARN_EVERY:
                return
            self._last_warning = now
            count, self._dropped_unreported = self._dropped_unreported, 0
        log.warning(
            "prediction log: dropped %d cars since the last warning (%s; queue holds at most %d)",
            count,
            reason,
            self.queue_max,
        )

    @property
    def depth(self) -> int:
        """Cars queued or being written."""
        return self._pending

    # --- lifecycle ---

    def start(self) -> None:
        """Start the writer thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="carprice-prediction-log", daemon=True
            )
            self._thread.start()

    def close(self, timeout: float) -> bool:
        """Take no more entries, write what is queued (waiting up to ``timeout`` seconds), stop.

        Returns whether everything queued was written; what was not is counted as dropped.
        """
        with self._lock:
            self._accepting = False
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                lost = self._pending
                log.error(
                    "prediction log: %d cars not written at shutdown (database unreachable?)",
                    lost,
                )
                LOG_ROWS_DROPPED.inc(lost)
                return False
        return self._pending == 0

    # --- the writer thread ---

    def _take(self) -> _Segment | None:
        """The oldest queued segment (the open one, closed, when it is the only one)."""
        with self._lock:
            if not self._queue:
                return None
            segment = self._queue.popleft()
            if segment is self._open:
                self._open = None
            return segment

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._disconnect()

    def _loop(self) -> None:
        try:
            self._prepare()
        except Exception as exc:  # the database is away: the first write tries again
            log.warning("prediction log database not reachable yet: %s", _first_line(exc))
        table: pa.Table | None = None
        rows = 0
        pause = _RETRY_FIRST
        while True:
            if table is None:
                if not self._stop.is_set():
                    self._wake.wait(self.flush_interval)
                    self._wake.clear()
                batch = self._take()
                LOG_QUEUE_DEPTH.set(self._pending)
                if batch is None:
                    if self._stop.is_set():
                        return
                    continue
                rows = batch.cars
                table = batch_table(batch)
            try:
                self._write(table)
            except (
                predictions.RefusedError
            ) as exc:  # refused for what it holds: a retry cannot help
                self.write_errors += 1
                LOG_WRITE_ERRORS.inc()
                log.error("prediction log refused a batch of %d cars: %s", rows, _first_line(exc))
                self._done(rows)
                self._drop(rows, "refused by the database")
            except Exception as exc:  # the database is away or hangs: keep the batch, retry
                self.write_errors += 1
                LOG_WRITE_ERRORS.inc()
                log.warning(
                    "prediction log write of %d cars failed (retrying in %.2g s): %s",
                    rows,
                    pause,
                    _first_line(exc),
                )
                time.sleep(pause)
                pause = min(pause * 2, _RETRY_MAX)
                continue
            else:
                self.written += rows
                LOG_ROWS_WRITTEN.inc(rows)
                self._done(rows)
            pause = _RETRY_FIRST
            table = None

    def _done(self, rows: int) -> None:
        with self._lock:
            self._pending -= rows
        LOG_QUEUE_DEPTH.set(self._pending)

    def _prepare(self) -> None:
        # At once rather than at the first write: the connection pool, the migration and what
        # they import then exist before the worker's heap is frozen (serving.main).
        if self._migrate:
            upgrade_engine(self.engine)  # the log's own database may be another one
            self._migrate = False
        self._connect()

    def _connect(self) -> Connection:
        if self._connection is None:
            self._connection = self.engine.connect()  # pre-pinged, when the engine does
        return self._connection

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.close()
        except Exception:  # a broken connection: the pool discards it
            log.debug("prediction log: closing the writer's connection failed", exc_info=True)

    def _write(self, table: pa.Table) -> None:
        if self._migrate:
            self._prepare()
        kept = self._connection is not None
        try:
            predictions.append(self._connect(), table)
            return
        except predictions.RefusedError:
            raise  # the connection is fine: the database answered
        except Exception:
            broken = self._connection is not None and _broken(self._connection)
            self._disconnect()
            if not (kept and broken):
                raise
        # The kept connection died since the last batch (a restart, an idle timeout): what a
        # pre-ping at checkout would have caught. Once more, on a new connection.
        try:
            predictions.append(self._connect(), table)
        except predictions.RefusedError:
            raise
        except Exception:
            self._disconnect()
            raise


def _broken(connection: Connection) -> bool:
    """Whether the connection was lost (as opposed to a statement that failed on it)."""
    if connection.invalidated or connection.closed:
        return True
    raw = connection.connection.dbapi_connection
    return raw is None or bool(getattr(raw, "broken", False) or getattr(raw, "closed", False))


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
