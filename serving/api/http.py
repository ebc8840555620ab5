"""uvicorn's httptools protocol, with each response sent in one write instead of two.

uvicorn writes a response's status line and headers to the socket when the app sends
``http.response.start`` and its body when the app sends the body: two ``send`` system calls
and two TCP segments for every answer, however small (on loopback a segment's sender also does
the receiver's TCP work): measured under load, a cached one-car prediction cost the server 128 us
of CPU that way and 113 us in one write, and the client 28 against 16 us.
:class:`OneWriteHttpToolsProtocol` hands uvicorn a transport whose
writes of one event-loop turn are joined and sent together at the end of that turn (the fast
lane sends both parts in one turn): one ``send``, one segment. Anything that ends or hands over
the connection (close, abort, an upgrade) sends what is pending first, so no byte is lost or
reordered.

``carprice serve`` runs uvicorn with it (``http=``); everything else is uvicorn's own.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _TurnWrites:
    """A transport's writes of one event-loop turn, sent as one at the end of the turn; every
    other call goes to the transport itself (after the pending bytes, where order matters)."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if self._pending is None:
            self._pending = [bytes(data)]
            self._loop.call_soon(self.flush)
        else:
            self._pending.append(bytes(data))

    def flush(self) -> None:
        """Send what this turn wrote (nothing if it was sent already)."""
        pending, self._pending = self._pending, None
        if pending:
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending = None  # abort discards what is buffered, by definition
        self._transport.abort()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.flush()
        self._transport.set_protocol(protocol)

    def get_write_buffer_size(self) -> int:
        pending = sum(map(len, self._pending)) if self._pending else 0
        return pending + self._transport.get_write_buffer_size()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over :class:`_TurnWrites` (see the module docstring)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_TurnWrites(transport, self.loop))  # type: ignore[arg-type]
