"""Refused requests are answered late: a client looping on refusals cannot run at full speed.

A request refused for what it *is* — credentials that prove nothing (401), a body past the size
limits (413) or one that is not JSON or breaks the JSON limits (422 ``limit_exceeded`` /
``invalid_json``) — costs the server well under a millisecond of CPU, since nothing of it is
parsed. But a client that sends such requests in a loop gets its answer at once and sends the
next: 32 of them sent 1,200 requests/s and took 0.7 of a core of two workers
(``make bench-hostile``), leaving legitimate traffic 13 % of its throughput. So such an answer
is *held* for ``CARPRICE_REFUSAL_DELAY`` seconds before it is sent (a tarpit): an asyncio sleep,
no CPU, the other requests of the worker go on; the unread rest of the body waits in the socket
(uvicorn stops reading past 64 KB). A refusal loop then gets one answer a second per
connection, whatever the client's speed. At most ``CARPRICE_REFUSAL_HOLD_MAX`` answers are held
at once per worker; past that they are sent at once, so that holding costs bounded memory.

Which answers are held is decided by their error ``code`` in one place,
:func:`serving.api.errors.error_response`, which makes them a :class:`Refusal`; the FastAPI
stack sends it like any response (it holds itself) and the fast lane holds it with
:func:`hold` before sending. An ordinary mistake (422 ``invalid_request``: a field out of
range) is answered at once, as are 403, 404 and 429 (which has its own ``Retry-After``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi.responses import JSONResponse
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from serving.monitoring.metrics import REFUSALS

HELD_CODES = frozenset({"not_authenticated", "payload_too_large", "limit_exceeded", "invalid_json"})
"""Error codes whose answers are held."""

_HELD = REFUSALS.labels("held")
_NOT_HELD = REFUSALS.labels("not_held")


class Tarpit:
    """Holds refused answers for ``delay`` seconds, at most ``max_held`` at once (per process:
    one per app, on ``app.state.tarpit``)."""

    def __init__(self, delay: float, max_held: int) -> None:
        self.delay = delay
        self.max_held = max_held
        self.held = 0

    async def hold(self) -> None:
        """Wait ``delay`` seconds, or not at all when ``max_held`` answers already wait."""
        if self.delay <= 0:
            return
        if self.held >= self.max_held:
            _NOT_HELD.inc()
            return
        _HELD.inc()
        self.held += 1
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.held -= 1


class Refusal(JSONResponse):
    """An error answer with a :data:`HELD_CODES` code: sent once the app's tarpit held it."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await hold(self, scope.get("app"))
        await super().__call__(scope, receive, send)


async def hold(response: Response, app: Any) -> None:
    """Hold ``response`` in ``app``'s tarpit if it is a :class:`Refusal` (an app without one,
    e.g. a bare test app, holds nothing)."""
    if isinstance(response, Refusal):
        tarpit: Tarpit | None = getattr(getattr(app, "state", None), "tarpit", None)
        if tarpit is not None:
            await tarpit.hold()
