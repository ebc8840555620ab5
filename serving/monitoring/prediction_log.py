"""The prediction log's writer: a bounded in-process queue and one thread writing it in batches.

:meth:`PredictionLog.record` is called by the prediction service for every answered request. It
only appends one entry (the request's rows, prices and who asked) to a queue under a lock held
for microseconds: a request never waits on the database. The writer thread turns queued
requests into one row per car and writes up to ``batch_rows`` of them per statement
(:func:`serving.store.predictions.append`: ``COPY`` on PostgreSQL).

Failure: a batch that cannot be written stays at the head of the queue and is retried with a
growing pause (0.25 s up to 5 s), so logging resumes by itself when the database is back. While
it is away the queue fills; once ``queue_max`` cars are waiting, new ones are dropped, counted
(``carprice_prediction_log_rows_dropped_total``) and reported in a warning at most every 10 s.

Shutdown: :meth:`close` (in the lifespan's shutdown, after uvicorn has answered every in-flight
request) stops taking entries and waits for the writer to drain the queue.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from serving.inference.features import FEATURES, Row, row_values
from serving.monitoring.metrics import (
    LOG_QUEUE_DEPTH,
    LOG_ROWS_DROPPED,
    LOG_ROWS_WRITTEN,
    LOG_WRITE_ERRORS,
)
from serving.store import predictions
from serving.store.database import upgrade_engine

log = logging.getLogger(__name__)

_INTEGER_POSITIONS = tuple(i for i, f in enumerate(FEATURES) if f.kind == "integer")
_RETRY_FIRST, _RETRY_MAX = 0.25, 5.0
_WARN_EVERY = 10.0


@dataclass(frozen=True, slots=True)
class _Entry:
    """One answered request, as queued: the work of turning it into rows is the writer's."""

    request_id: str
    api_version: str
    caller: str
    model_name: str
    model_version: str
    logged_at: datetime
    rows: Sequence[Row]
    prices: Sequence[float]
    cached: Sequence[bool]


def _records(entry: _Entry) -> list[tuple[Any, ...]]:
    """The entry's cars as value tuples in :data:`~serving.store.predictions.LOGGED_COLUMNS`
    order (integer features as ``int``: the API only accepts whole numbers there)."""
    head = (entry.api_version, entry.model_name, entry.model_version)
    out = []
    for i, (row, price, cached) in enumerate(
        zip(entry.rows, entry.prices, entry.cached, strict=True)
    ):
        features = list(row_values(row))
        for k in _INTEGER_POSITIONS:
            value = features[k]
            if value is not None:
                features[k] = int(value)
        out.append(
            (entry.request_id, i, entry.logged_at, *head, price, cached, entry.caller, *features)
        )
    return out


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
        self._queue: deque[_Entry] = deque()
        self._lock = threading.Lock()
        self._pending = 0  # cars queued or being written, under _lock
        self._accepting = True
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
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
        rows: Sequence[Row],
        prices: Sequence[float],
        cached: Sequence[bool],
    ) -> bool:
        """Queue one answered request's cars; False (and counted) when they were dropped."""
        n = len(rows)
        entry = _Entry(
            request_id,
            api_version,
            caller,
            model_name,
            model_version,
            datetime.now(UTC),
            rows,
            prices,
            cached,
        )
        with self._lock:
            if self._accepting and self._pending + n <= self.queue_max:
                self._queue.append(entry)
                self._pending += n
                full = self._pending >= self.batch_rows
                accepted = True
            else:
                accepted = full = False
        if full:
            self._wake.set()
        if not accepted:
            self._drop(n)
        return accepted

    def _drop(self, n: int) -> None:
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
            "prediction log queue full (%d cars waiting): dropped %d cars since the last warning",
            self.queue_max,
            count,
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

    def _take(self) -> tuple[list[_Entry], int]:
        with self._lock:
            taken: list[_Entry] = []
            rows = 0
            while self._queue and rows < self.batch_rows:
                entry = self._queue.popleft()
                taken.append(entry)
                rows += len(entry.rows)
            return taken, rows

    def _run(self) -> None:
        batch: list[_Entry] = []
        rows = 0
        records: list[tuple[Any, ...]] = []
        pause = _RETRY_FIRST
        while True:
            if not batch:
                if not self._stop.is_set():
                    self._wake.wait(self.flush_interval)
                    self._wake.clear()
                batch, rows = self._take()
                LOG_QUEUE_DEPTH.set(self._pending)
                if not batch:
                    if self._stop.is_set():
                        return
                    continue
                records = [r for entry in batch for r in _records(entry)]
            try:
                self._write(records)
            except Exception as exc:  # the database is away or refused: keep the batch, retry
                self.write_errors += 1
                LOG_WRITE_ERRORS.inc()
                log.warning(
                    "prediction log write of %d cars failed (retrying in %.2g s): %s",
                    rows,
                    pause,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                )
                time.sleep(pause)
                pause = min(pause * 2, _RETRY_MAX)
                continue
            pause = _RETRY_FIRST
            with self._lock:
                self._pending -= rows
            self.written += rows
            LOG_ROWS_WRITTEN.inc(rows)
            LOG_QUEUE_DEPTH.set(self._pending)
            batch, records = [], []

    def _write(self, records: list[tuple[Any, ...]]) -> None:
        if self._migrate:
            upgrade_engine(self.engine)  # the log's own database may be another one
            self._migrate = False
        with self.engine.begin() as connection:
            predictions.append(connection, records)
