"""Micro-batching: concurrent single-car predictions for one model run as one vectorised call.

Under load many requests reach the model within the same turn of the event loop. Each would pay
the fixed cost of a predict call (array set-up, one pass over every tree level) for one row;
together they pay it once. Small batches on the fast path run inline on the event loop (a
fraction of a millisecond, cheaper than a hop to a worker thread); large batches and models
without a fast path run in a worker thread, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import anyio.to_thread
import numpy as np

from serving.features import Row
from serving.metrics import MICROBATCH_ROWS
from serving.model import LoadedModel

_Waiter = tuple[Sequence[Row], "asyncio.Future[np.ndarray]"]


class MicroBatcher:
    """Coalesces small concurrent predictions per model (see module docstring)."""

    def __init__(self, max_rows: int, wait_s: float) -> None:
        self.max_rows = max_rows
        self.wait_s = wait_s
        self._pending: dict[LoadedModel, list[_Waiter]] = {}
        self._sizes: dict[LoadedModel, int] = {}

    async def predict(self, model: LoadedModel, rows: Sequence[Row]) -> np.ndarray:
        """Prices for ``rows`` from ``model``, possibly computed together with other calls."""
        if not model.fast or len(rows) >= self.max_rows:
            return await anyio.to_thread.run_sync(model.predict, rows)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        waiters = self._pending.get(model)
        if waiters is None:
            waiters = self._pending[model] = []
            self._sizes[model] = 0
            if self.wait_s > 0:
                loop.call_later(self.wait_s, self._flush, model)
            else:
                loop.call_soon(self._flush, model)
        waiters.append((rows, future))
        self._sizes[model] += len(rows)
        if self._sizes[model] >= self.max_rows:
            self._flush(model)
        return await future

    def _flush(self, model: LoadedModel) -> None:
        waiters = self._pending.pop(model, None)
        self._sizes.pop(model, None)
        if not waiters:
            return  # already flushed because it filled up
        rows = [row for batch, _ in waiters for row in batch]
        MICROBATCH_ROWS.observe(len(rows))
        try:
            prices = model.predict(rows)
        except Exception as exc:  # every caller gets the failure, none hangs
            for _, future in waiters:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for batch, future in waiters:
            if not future.done():  # a cancelled request
                future.set_result(prices[start : start + len(batch)])
            start += len(batch)
