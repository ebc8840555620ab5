"""Ground truth fed back: the real sale price of logged cars, reported by request id and row.

``POST /v1/feedback`` calls :meth:`FeedbackService.report`; ``carprice feedback import`` calls
:func:`serving.store.predictions.record_feedback` in bulk mode directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from serving.errors import (
    FeedbackExists,
    InvalidFeedback,
    PredictionLogUnavailable,
    UnknownPrediction,
)
from serving.store.predictions import Feedback, record_feedback

_NAMED = 5  # cars named in an error message (all of them are in its details)


def _names(keys: Sequence[tuple[str, int]]) -> str:
    shown = ", ".join(f"request_id {rid[:128]!r} row {row}" for rid, row in keys[:_NAMED])
    return shown + (f" and {len(keys) - _NAMED} more" if len(keys) > _NAMED else "")


def _details(keys: Sequence[tuple[str, int]]) -> list[dict[str, object]]:
    return [{"request_id": rid, "row": row} for rid, row in keys[:100]]


class FeedbackService:
    """Records reports against the prediction log: all of a request's reports, or none."""

    def __init__(self, engine: Engine, batch_max: int, timeout: float) -> None:
        self.engine = engine
        self.batch_max = batch_max
        self.timeout = timeout

    async def report(self, reports: Sequence[Feedback]) -> int:
        """Record ``reports``; returns how many (all of them).

        Raises:
            InvalidFeedback: no reports, or more than ``batch_max``.
            UnknownPrediction: a request id / row is not in the log (nothing is recorded).
            FeedbackExists: a car already has its real price, or is named twice (nothing is
                recorded; the first value stays).
            PredictionLogUnavailable: the log's database did not answer in time.
        """
        if not reports:
            raise InvalidFeedback("send at least one report")
        if len(reports) > self.batch_max:
            raise InvalidFeedback(
                f"{len(reports)} reports in one request; at most {self.batch_max} are accepted"
            )
        try:
            outcome = await asyncio.wait_for(
                asyncio.to_thread(record_feedback, self.engine, reports, all_or_nothing=True),
                self.timeout,
            )
        except (TimeoutError, SQLAlchemyError) as exc:
            raise PredictionLogUnavailable(
                "the prediction log is unavailable; retry later"
            ) from exc
        if outcome.unknown:
            raise UnknownPrediction(
                f"no logged prediction for {_names(outcome.unknown)}", _details(outcome.unknown)
            )
        if outcome.duplicates:
            raise FeedbackExists(
                f"the real price of {_names(outcome.duplicates)} was already reported "
                "(the first report stays)",
                _details(outcome.duplicates),
            )
        return outcome.matched
