"""Real sockets for the serving tests: a uvicorn server in a thread, ``carprice serve`` in its own
process, and a black-hole server.

A thread server shares the test process (the imports and the trained models are already
there), so it starts in well under a second, and stopping it runs uvicorn's real graceful
shutdown (the same path SIGTERM takes).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass
class ServerProcess:
    """``carprice serve`` in its own process: its URL, an API key of the predict role, the
    process, the log file (JSON lines) and the worker processes' ids."""

    url: str
    port: int
    key: str
    proc: subprocess.Popen[bytes]
    log: Path

    def workers(self) -> list[int]:
        """The ids of the processes serving requests (the workers, or the server itself)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        pids = [int(p) for p in children.split()]
        # uvicorn --workers N: a supervisor whose children are the workers (plus a
        # multiprocessing helper that is not an interpreter serving requests).
        workers = [p for p in pids if "uvicorn" in _cmdline(p) or "carprice" in _cmdline(p)]
        return workers or [self.proc.pid]

    def access_log(self) -> list[dict[str, Any]]:
        """The access-log lines written so far."""
        lines = [line for line in self.log.read_text().splitlines() if line.startswith("{")]
        return [r for r in map(json.loads, lines) if r.get("logger") == "serving.access_log"]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@contextlib.contextmanager
def server_process(
    registry_uri: str, workdir: Path, *, workers: int = 1, **settings: str
) -> Iterator[ServerProcess]:
    """``carprice serve`` on a free port with the registry at ``registry_uri`` (in-process
    cache, a SQLite user database in ``workdir``), ready; stopped with SIGTERM afterwards.
    ``settings`` are extra ``CARPRICE_*`` variables (without the prefix, lower case)."""
    from tests.serving.support import TEST_SECRET

    port = closed_port()
    database = f"sqlite:///{workdir / 'users.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARPRICE_")} | {
        "MLFLOW_TRACKING_URI": registry_uri,
        "CARPRICE_ENV": "test",
        "CARPRICE_JWT_SECRET": TEST_SECRET,
        "CARPRICE_DATABASE_URL": database,
        "CARPRICE_BCRYPT_ROUNDS": "4",
        "CARPRICE_RATE_LIMIT": "1000000/minute",
        # Refusals answered at once (schemathesis gets thousands): what is measured on this
        # server is the cost of a refusal; the tarpit's own tests give a delay.
        "CARPRICE_REFUSAL_DELAY": "0",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env |= {f"CARPRICE_{k.upper()}": v for k, v in settings.items()}
    key = _predict_key(database)
    carprice = Path(sys.executable).with_name("carprice")
    log = workdir / f"serve-{port}.log"
    workers_arg = ("--workers", str(workers))
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(carprice), "serve", "--host", "127.0.0.1", "--port", str(port), *workers_arg],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", port, key, proc, log)
    try:
        wait_ready(server.url, timeout=180)
        # Every worker answers (with several, the first ready one is not all of them).
        deadline = time.monotonic() + 120
        while len(server.workers()) < workers and time.monotonic() < deadline:
            time.sleep(0.2)
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _predict_key(database_url: str) -> str:
    """A user of the predict role and a key, in the (migrated) database at ``database_url``."""
    from serving.access.accounts import Accounts
    from serving.access.passwords import PasswordHasher
    from serving.access.principals import Role
    from serving.store.database import open_database

    db = open_database(database_url, migrate=True)
    try:
        accounts = Accounts(db, PasswordHasher(4))
        accounts.create_user("hostile", "a-long-test-password", Role.PREDICT)
        key: str = accounts.create_key("hostile", "tests").key
        return key
    finally:
        db.close()
