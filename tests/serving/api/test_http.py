"""carprice serve's HTTP protocol: uvicorn's httptools protocol, each response in one write.

uvicorn's own protocol drives a recording transport (the socket is the boundary): the same
requests through uvicorn's ``HttpToolsProtocol`` show the two writes per response that
:class:`~serving.api.http.OneWriteHttpToolsProtocol` joins, so the count is not vacuous. The
bytes must be the same either way, in the same order, before the connection closes. Over a real
socket, every test that starts ``carprice serve`` runs it too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from serving.api.http import OneWriteHttpToolsProtocol
from serving.cli.serve import HTTP_PROTOCOL

App = Callable[[Any, Any, Any], Any]


class Recorder(asyncio.Transport):
    """A transport that records what the protocol does to it, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, bytes]] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.events.append(("write", bytes(data)))

    def close(self) -> None:
        self.events.append(("close", b""))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    @property
    def written(self) -> bytes:
        return b"".join(data for event, data in self.events if event == "write")

    @property
    def writes(self) -> int:
        return sum(event == "write" for event, _ in self.events)


def _run(protocol_class: type[HttpToolsProtocol], app: App, request: bytes) -> Recorder:
    return asyncio.run(_serve(protocol_class, app, request))


async def _serve(protocol_class: type[HttpToolsProtocol], app: App, request: bytes) -> Recorder:
    config = Config(app, http="httptools", lifespan="off", access_log=False)
    protocol = protocol_class(config, ServerState(), app_state={})
    transport = Recorder()
    protocol.connection_made(transport)
    protocol.data_received(request)
    for _ in range(50):  # the app's task, then the end of its last turn
        await asyncio.sleep(0)
    return transport


async def _one_turn(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"13")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b'{"price":1.0}'})


async def _streamed(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for part in (b"first,", b"second,", b"third"):
        await asyncio.sleep(0)  # each part in a turn of its own
        await send({"type": "http.response.body", "body": part, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


REQUEST = b"POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"


def test_carprice_serve_runs_the_one_write_protocol() -> None:
    module, name = HTTP_PROTOCOL.split(":")
    assert getattr(__import__(module, fromlist=[name]), name) is OneWriteHttpToolsProtocol


def test_a_response_sent_in_one_turn_is_one_write_with_the_same_bytes() -> None:
    plain = _run(HttpToolsProtocol, _one_turn, REQUEST)
    joined = _run(OneWriteHttpToolsProtocol, _one_turn, REQUEST)
    assert plain.writes == 2  # status line and headers, then the body
    assert joined.writes == 1
    assert joined.written == plain.written
    assert joined.written.startswith(b"HTTP/1.1 200 OK\r\n")
    assert joined.written.endswith(b'\r\n\r\n{"price":1.0}')


def test_two_pipelined_requests_are_answered_in_order() -> None:
    twice = REQUEST + REQUEST
    plain = _run(HttpToolsProtocol, _one_turn, twice)
    joined = _run(OneWriteHttpToolsProtocol, _one_turn, twice)
    assert joined.written == plain.written
    assert joined.written.count(b"HTTP/1.1 200 OK") == 2


def test_a_body_streamed_over_several_turns_keeps_its_bytes_and_order() -> None:
    plain = _run(HttpToolsProtocol, _streamed, REQUEST)
    joined = _run(OneWriteHttpToolsProtocol, _streamed, REQUEST)
    assert joined.written == plain.written
    assert b"first," in joined.written
    assert joined.written.endswith(b"0\r\n\r\n")
    assert 1 < joined.writes <= plain.writes


def test_everything_written_goes_out_before_the_connection_closes() -> None:
    closing = REQUEST.replace(b"host: x\r\n", b"host: x\r\nconnection: close\r\n")
    plain = _run(HttpToolsProtocol, _one_turn, closing)
    joined = _run(OneWriteHttpToolsProtocol, _one_turn, closing)
    assert joined.events[-1] == ("close", b"")
    assert joined.written == plain.written
    assert joined.writes == 1


def test_an_error_before_the_answer_gets_uvicorns_500_in_full() -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    plain = _run(HttpToolsProtocol, broken, REQUEST)
    joined = _run(OneWriteHttpToolsProtocol, broken, REQUEST)
    assert joined.written == plain.written
    assert joined.written.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
