"""Real sockets for the serving tests: a uvicorn server in a thread, and a black-hole server.

A thread server shares the test process (the imports and the trained models are already
there), so it starts in well under a second, and stopping it runs uvicorn's real graceful
shutdown (the same path SIGTERM takes).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import uvicorn
from fastapi import FastAPI


@dataclass
class LiveServer:
    """A running server: its base URL and the uvicorn handle (``should_exit`` stops it)."""

    url: str
    port: int
    server: uvicorn.Server
    thread: threading.Thread
    headers: dict[str, str]  # an API key of the predict role

    def stop(self, timeout: float = 15) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "uvicorn did not stop"


def wait_ready(url: str, timeout: float = 30) -> None:
    """Poll ``/v2/health/ready`` until it answers 200."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=2) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if client.get("/v2/health/ready").status_code == 200:
                    return
            time.sleep(0.05)
    raise AssertionError(f"{url} not ready after {timeout} s")


@contextlib.contextmanager
def live_server(app: FastAPI, *, ready: bool = True, graceful: float = 10) -> Iterator[LiveServer]:
    """Run ``app`` under uvicorn on a free 127.0.0.1 port for the duration of the block."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(graceful),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "uvicorn failed to start"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    from tests.serving.support import grant_key

    live = LiveServer(
        f"http://127.0.0.1:{port}", port, server, thread, {"X-API-Key": grant_key(app)}
    )
    try:
        if ready:
            wait_ready(live.url)
        yield live
    finally:
        if thread.is_alive():
            live.stop()
        sock.close()


class BlackHole:
    """A TCP server that accepts connections and never answers (nor closes them)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port: int = self._sock.getsockname()[1]
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self._sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._held.append(conn)  # read nothing, write nothing

    @property
    def connections(self) -> int:
        return len(self._held)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for conn in self._held:
            conn.close()
        self._sock.close()


def closed_port() -> int:
    """A 127.0.0.1 port with nothing listening (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
