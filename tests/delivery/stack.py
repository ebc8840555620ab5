"""The compose stack's servers, without Docker: SeaweedFS as the S3 store, a real `mlflow server`
on PostgreSQL with its artifacts proxied to that store, and a TCP forwarder that stands in for
a server coming up late. Loopback only, free ports, each run its own databases and data dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import psycopg

from tests.delivery.conftest import BIN

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
BUCKET = "mlflow"


def free_ports(count: int) -> list[int]:
    """``count`` distinct free 127.0.0.1 ports (bound together, then released)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, proc: Process | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise AssertionError(f"{what}: the process exited\n{proc.tail()}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not after {timeout:g} s" + (f"\n{proc.tail()}" if proc else ""))


@dataclass
class Process:
    """A server process with its output in a file (read back on failure or for log checks)."""

    popen: subprocess.Popen[bytes]
    log: Path
    _out: IO[bytes] = field(repr=False)

    @classmethod
    def start(
        cls, args: list[str], log: Path, env: dict[str, str], cwd: Path | None = None
    ) -> Process:
        out = log.open("ab")
        # Its own process group: `mlflow server` and `carprice serve` run worker processes,
        # and stopping the group stops them too.
        popen = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
        return cls(popen, log, out)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, wait (then SIGKILL); the exit code."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)  # a worker that outlived its parent
        self._out.close()
        return int(self.popen.returncode)


class SeaweedS3:
    """`weed server -s3` on free loopback ports, with one access key; restartable on the same
    ports and data (to play an S3 outage)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.data.mkdir(parents=True)
        self.access_key = "carprice-test"
        self.secret_key = secrets.token_hex(16)
        config = {
            "identities": [
                {
                    "name": "carprice",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        self.config = root / "s3.json"
        self.config.write_text(json.dumps(config))
        self.ports = free_ports(11)
        self.endpoint = f"http://127.0.0.1:{self.ports[6]}"
        self.proc: Process | None = None

    def start(self) -> None:
        """Start the server (without waiting for it: see :meth:`wait`)."""
        p = self.ports
        args = [
            str(BIN / "weed"), "server", f"-dir={self.data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", f"-master.port={p[0]}", f"-master.port.grpc={p[1]}",
            f"-volume.port={p[2]}", f"-volume.port.grpc={p[3]}", "-volume.max=4", "-filer",
            f"-filer.port={p[4]}", f"-filer.port.grpc={p[5]}", "-s3", f"-s3.port={p[6]}",
            f"-s3.port.grpc={p[7]}", f"-s3.port.iceberg={p[8]}", f"-s3.port.lance={p[9]}",
            f"-metricsPort={p[10]}", f"-s3.config={self.config}",
        ]  # fmt: skip
        self.proc = Process.start(args, self.root / "weed.log", dict(os.environ))

    def wait(self, timeout: float = 60) -> None:
        """Until the store answers (its bucket made, an object written)."""
        wait_until(self.ready, timeout, "SeaweedFS S3", self.proc)

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
        )

    def ready(self) -> bool:
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=BUCKET)
        client.put_object(Bucket=BUCKET, Key="ready", Body=b"1")
        return True

    def object_keys(self) -> list[str]:
        listed = self.client().list_objects_v2(Bucket=BUCKET)
        return [item["Key"] for item in listed.get("Contents", [])]

    def stop(self) -> None:
        """Stop the store, hard: `weed server` does not exit on SIGTERM while its filer
        retries the stopped volume server (20 s of waiting, then the SIGKILL anyway)."""
        if self.proc is not None:
            self.proc.stop(timeout=1)
            self.proc = None


@contextlib.contextmanager
def postgres_databases(*prefixes: str) -> Iterator[list[str]]:
    """Fresh PostgreSQL databases (names), dropped afterwards."""
    names = [f"{prefix}_{secrets.token_hex(5)}" for prefix in prefixes]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as admin:
        for name in names:
            admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield names
        finally:
            for name in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class MlflowServer:
    """`mlflow server` as docker-compose.yml runs it: PostgreSQL, artifacts proxied to S3."""

    def __init__(self, root: Path, database: str, s3: SeaweedS3) -> None:
        (self.port,) = free_ports(1)
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env.update(
            MLFLOW_BACKEND_STORE_URI=f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}",
            MLFLOW_S3_ENDPOINT_URL=s3.endpoint,
            AWS_ACCESS_KEY_ID=s3.access_key,
            AWS_SECRET_ACCESS_KEY=s3.secret_key,
            AWS_DEFAULT_REGION="us-east-1",
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
            MLFLOW_DISABLE_TELEMETRY="true",
            # The proxied download of a stopped S3 store must fail fast, not retry for minutes.
            AWS_MAX_ATTEMPTS="1",
            AWS_RETRY_MODE="standard",
        )
        args = [
            str(BIN / "mlflow"), "server", "--host=127.0.0.1", f"--port={self.port}", "--workers=1",
            f"--artifacts-destination=s3://{BUCKET}/artifacts", "--serve-artifacts",
        ]  # fmt: skip
        self.proc = Process.start(args, root / "mlflow.log", env, cwd=root)

    def wait(self, timeout: float = 180) -> None:
        wait_until(
            lambda: httpx.get(f"{self.url}/health", timeout=2).status_code == 200,
            timeout,
            "mlflow server",
            self.proc,
        )


class Forwarder:
    """A TCP port that refuses connections until :meth:`open`, then forwards them to
    ``target``: a server that comes up after the API has started."""

    def __init__(self, target: int) -> None:
        (self.port,) = free_ports(1)
        self.target = target
        self._sock: socket.socket | None = None
        self._stop = threading.Event()

    def open(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", self.port))
        self._sock.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


def python_env() -> dict[str, str]:
    """This environment with the venv's bin first (dvc, carprice, mlflow)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env
