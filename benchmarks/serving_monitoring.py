"""Monitoring benchmark (issue 10): what the prediction log and the multiprocess metrics cost,
and what they guarantee, in the production configuration.

Run ``python -m benchmarks.serving_monitoring`` (``make bench-monitoring``, ~6 minutes). Every
API here runs ``carprice serve --workers 2`` with the Redis cache and Redis rate limits on
(Redis DB 7 on 127.0.0.1:6379, emptied first) and a fresh PostgreSQL database for the log.

1. Overhead, side by side in one run: the API with the prediction log and the multiprocess metrics
   on (``carprice serve``, log in PostgreSQL) against the same API with both off
   (``CARPRICE_PREDICTION_LOG=false``, run by ``uvicorn --workers 2`` with carprice serve's HTTP
   protocol, without ``PROMETHEUS_MULTIPROC_DIR``: per-process metrics, as before this issue).
   Loads (``wrk``, 32 connections): ``/v1/predict`` with distinct cars (uncached), one car
   (cached), and ``/v1/predict/batch`` with 1,000 distinct cars. The two sides alternate (ABBA) for
   ``--rounds`` rounds; each ratio is the median of the rounds' ratios. Targets: cached and
   uncached >= 95 %, batches >= 90 %. Beside each throughput, the CPU per request of each side (its
   server processes; for "on" also PostgreSQL's backends of the log database) and their off/on
   ratio: on a shared machine other jobs move throughput a lot and CPU per request little. Also the
   off/on CPU ratio of the API processes alone (without PostgreSQL's): the overhead where the log
   database has cores of its own.
2. SIGTERM drain: 20 concurrent clients send uncached ``/v1/predict`` for ``--drain-seconds``
   (15) seconds, each request with its own ``X-Request-ID``; then SIGTERM. Target: the set of
   ids answered 200 equals the set of logged ids, none twice.
3. Log database unreachable: the log's URL points at a proxy that accepts connections and
   never answers; ``wrk`` runs uncached load for ``--duration`` seconds. Targets: no failed
   request, p99 < 100 ms, drops counted in ``/metrics``; then the proxy passes connections to
   PostgreSQL and logging resumes by itself (new requests appear in the log).
4. Exact totals: N requests (8 clients, new connections spread over both workers), then 10
   scrapes of ``/metrics``; target: ``http_requests_total{handler="/v1/predict"}`` grew by
   exactly N in every scrape.

``--only cached,batch`` runs only the parts named (of ``uncached``, ``cached``, ``batch``,
``exact``, ``drain``, ``unreachable``) and checks only their targets: a quicker loop while
working on one of them (with ``--rounds 2 --duration 3`` quicker still).

Prints every figure and writes ``benchmarks/results/serving_monitoring.json``. Needs ``wrk``
(Debian/Ubuntu: ``apt-get install -y wrk``), Redis and PostgreSQL on 127.0.0.1 (``make
services``). The machine may be shared: the figures of one run are noisy, the paired ratios
less so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks.processes import PG_ADMIN, cpu_s, database_backends, server_pids
from benchmarks.serving import (
    DEFAULT_URI,
    MODEL,
    ROOT,
    api_key,
    cars,
    free_port,
    run_in_workdir,
    server,
    temp_model,
    wait_http,
    write_lines,
    wrk,
)
from serving.cli.serve import HTTP_PROTOCOL

RESULTS = ROOT / "benchmarks" / "results" / "serving_monitoring.json"
REDIS = "redis://127.0.0.1:6379/7"
LOADS = ("uncached", "cached", "batch")
PARTS = (*LOADS, "exact", "drain", "unreachable")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5, help="seconds per wrk slice")
    parser.add_argument("--rounds", type=int, default=4, help="ABBA rounds of the overhead")
    parser.add_argument("--drain-seconds", type=float, default=15)
    parser.add_argument("--exact-requests", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--temp-model", action="store_true", help="train a model here")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"comma-separated parts to run (default all: {','.join(PARTS)})",
    )
    args = parser.parse_args()
    args.parts = [p.strip() for p in args.only.split(",") if p.strip()]
    if not args.parts or set(args.parts) - set(PARTS):
        parser.error(f"--only takes some of {','.join(PARTS)}, got {args.only!r}")
    return run_in_workdir(args, "carprice-bench-monitoring-", _run)


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    import psycopg

    name = f"carprice_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Proxy:
    """TCP proxy to PostgreSQL: ``up`` forwards; down accepts and never answers."""

    def __init__(self) -> None:
        self.up = False
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if not self.up:
                self.held.append(client)
                continue
            upstream = socket.create_connection(("127.0.0.1", 5432))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def scrape(base: str) -> str:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:  # noqa: S310 - 127.0.0.1
        return str(r.read().decode())


def metric_sum(text: str, family: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for metric in text_string_to_metric_families(text):
        for s in metric.samples:
            if s.name == family and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def logged_ids(url: str) -> list[str]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as c:
            return [r[0] for r in c.execute(text("SELECT request_id FROM prediction_log"))]
    finally:
        engine.dispose()


def _run(args: argparse.Namespace, workdir: Path) -> int:
    import redis

    from serving.store.database import upgrade

    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    if args.temp_model:
        print("training a temporary model ...", flush=True)
        uri = temp_model(workdir)
    print(f"model: {MODEL}@production from {uri}", flush=True)
    redis.Redis.from_url(REDIS).flushdb()
    pool = cars(60_000, seed=7)
    one = next(c for c in pool if all(v is not None for v in c.values()))
    stream = write_lines(workdir / "stream.jsonl", pool[1000:])
    single = write_lines(workdir / "single.jsonl", [one])
    batch = write_lines(workdir / "batch.jsonl", [pool[:1000]])
    venv_bin = Path(sys.executable).parent
    env = os.environ | {
        "MLFLOW_TRACKING_URI": uri,
        "PYTHONUNBUFFERED": "1",
        "CARPRICE_ENV": "test",
        "CARPRICE_JWT_SECRET": secrets.token_hex(32),
        # A loaded machine made registry calls take over 10 s: a worker whose first poll timed
        # out would wait a whole reload interval for its model.
        "CARPRICE_RELOAD_INTERVAL": "10",
        "CARPRICE_REGISTRY_TIMEOUT": "120",
        "CARPRICE_CACHE_URL": REDIS,  # cache and (reused) rate limits in Redis
        "CARPRICE_RATELIMIT_NAMESPACE": f"carprice-bench:{secrets.token_hex(4)}:",
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    key = api_key(env, workdir, venv_bin)
    offset = 0
    report: dict[str, Any] = {"model": uri, "cpus": os.cpu_count(), "rounds": args.rounds}

    def serve_cmd(port: int) -> list[str]:
        return [str(venv_bin / "carprice"), "serve", "--port", str(port), "--workers", "2"]

    def load(url: str, kind: str, pids: list[int], db_pids: list[int]) -> dict[str, Any]:
        nonlocal offset
        if kind == "cached":  # the one car cached first, outside the measured CPU
            wrk(url, single, "single", args, seconds=1, api_key=key)
        before, db_before = cpu_s(pids), cpu_s(db_pids)
        if kind == "cached":
            result = wrk(url, single, "single", args, api_key=key)
        elif kind == "uncached":
            result = wrk(url, stream, "cycle", args, offset=offset, api_key=key)
        else:
            result = wrk(f"{url}/batch", batch, "perturb", args, offset=offset, api_key=key)
        offset += result["requests"] + 1000
        db_us = (cpu_s(db_pids) - db_before) / max(1, result["requests"]) * 1e6
        cpu_us = (cpu_s(pids) - before) / max(1, result["requests"]) * 1e6 + db_us
        value = result["requests_per_s"] * (1000 if kind == "batch" else 1)
        return result | {"value": value, "cpu_us_per_request": cpu_us, "db_cpu_us": db_us}

    loads = [kind for kind in LOADS if kind in args.parts]
    if loads or "exact" in args.parts:
        with pg_database() as log_url:
            upgrade(log_url)
            on_env = env | {"CARPRICE_PREDICTION_LOG_URL": log_url}
            off_env = env | {"CARPRICE_PREDICTION_LOG": "false"}
            # 1. overhead
            with contextlib.ExitStack() as stack:
                on_port, off_port = free_port(), free_port()
                print("starting the API with log + metrics on, and with both off ...", flush=True)
                stack.enter_context(
                    server(serve_cmd(on_port), on_env, _ready(on_port), workdir / "on.log")
                )
                off_cmd = [
                    sys.executable, "-m", "uvicorn", "serving.main:app", "--port", str(off_port),
                    "--workers", "2", "--no-access-log", "--no-server-header",
                    "--timeout-worker-healthcheck", "60",  # as carprice serve
                    "--http", HTTP_PROTOCOL, "--log-level", "warning",
                ]  # fmt: skip
                stack.enter_context(server(off_cmd, off_env, _ready(off_port), workdir / "off.log"))
                sides = {
                    "on": f"http://127.0.0.1:{on_port}/v1/predict",
                    "off": f"http://127.0.0.1:{off_port}/v1/predict",
                }
                # CPU per request: the server's processes, and for "on" the log database's backends
                # too (PostgreSQL shares these cores). A figure other jobs on the machine barely
                # move, unlike throughput: off/on CPU is the throughput ratio of a CPU-bound server.
                log_db = log_url.rsplit("/", 1)[1]
                processes: dict[str, Callable[[], tuple[list[int], list[int]]]] = {
                    "on": lambda: (server_pids(on_port), database_backends(log_db)),
                    "off": lambda: (server_pids(off_port), []),
                }
                for url in sides.values():  # warm both workers of each
                    wrk(url, stream, "cycle", args, offset=offset, seconds=3, api_key=key)
                    offset += 200_000
                overhead: dict[str, Any] = {}
                for kind in loads:
                    ratios, cpu_ratios, api_cpu_ratios, per_round = [], [], [], []
                    for r in range(args.rounds):
                        order = ["on", "off"] if r % 2 == 0 else ["off", "on"]
                        got = {side: load(sides[side], kind, *processes[side]()) for side in order}
                        cpu_ratio = (
                            got["off"]["cpu_us_per_request"] / got["on"]["cpu_us_per_request"]
                            if got["on"]["requests"] and got["off"]["requests"]
                            else None
                        )
                        # The same without the log database's CPU: the overhead in the API
                        # processes alone, as where PostgreSQL has cores of its own.
                        api_cpu_ratio = (
                            got["off"]["cpu_us_per_request"]
                            / (got["on"]["cpu_us_per_request"] - got["on"]["db_cpu_us"])
                            if cpu_ratio is not None
                            else None
                        )
                        if cpu_ratio is not None and api_cpu_ratio is not None:
                            cpu_ratios.append(cpu_ratio)
                            api_cpu_ratios.append(api_cpu_ratio)
                        # A slice in which no request completed (a loaded machine, 1,000-car
                        # batches) has no ratio: it is left out of the median, and reported.
                        ratio = (
                            got["on"]["value"] / got["off"]["value"]
                            if got["off"]["value"]
                            else None
                        )
                        if ratio is not None:
                            ratios.append(ratio)
                        per_round.append(got)
                        print(
                            f"  {kind} round {r + 1}: on {got['on']['value']:.0f}, "
                            f"off {got['off']['value']:.0f} "
                            f"({'n/a' if ratio is None else f'{ratio:.1%}'}); errors "
                            f"{got['on']['errors']}/{got['off']['errors']}; CPU us/request on "
                            f"{got['on']['cpu_us_per_request']:.0f} (PostgreSQL "
                            f"{got['on']['db_cpu_us']:.0f}), off "
                            f"{got['off']['cpu_us_per_request']:.0f} (off/on "
                            f"{'n/a' if cpu_ratio is None else f'{cpu_ratio:.1%}'}; "
                            "without PostgreSQL "
                            f"{'n/a' if api_cpu_ratio is None else f'{api_cpu_ratio:.1%}'})",
                            flush=True,
                        )
                    overhead[kind] = {
                        "ratio_median": statistics.median(ratios) if ratios else 0.0,
                        "ratios": ratios,
                        "cpu_ratio_median": statistics.median(cpu_ratios) if cpu_ratios else 0.0,
                        "cpu_ratios": cpu_ratios,
                        "api_cpu_ratio_median": (
                            statistics.median(api_cpu_ratios) if api_cpu_ratios else 0.0
                        ),
                        "api_cpu_ratios": api_cpu_ratios,
                        "on_median": statistics.median(g["on"]["value"] for g in per_round),
                        "off_median": statistics.median(g["off"]["value"] for g in per_round),
                        "on_p99_ms": statistics.median(g["on"]["p99_ms"] for g in per_round),
                        "off_p99_ms": statistics.median(g["off"]["p99_ms"] for g in per_round),
                        "rounds": per_round,
                    }
                report["overhead"] = overhead
                # 4. exact totals (on the "on" server, still running)
                if "exact" in args.parts:
                    report["exact"] = _exact(
                        f"http://127.0.0.1:{on_port}", key, args.exact_requests
                    )
                    print(f"  exact totals: {json.dumps(report['exact'])}", flush=True)

    # 2. SIGTERM drain, on its own database
    if "drain" in args.parts:
        with pg_database() as log_url:
            upgrade(log_url)
            report["drain"] = _drain(serve_cmd, env | {"CARPRICE_PREDICTION_LOG_URL": log_url},
                                     log_url, key, pool, args, workdir)  # fmt: skip
            print(f"  drain: {json.dumps({k: v for k, v in report['drain'].items()})}", flush=True)

    # 3. unreachable log database
    if "unreachable" in args.parts:
        with pg_database() as log_url:
            upgrade(log_url)
            proxy = Proxy()
            proxied = log_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
            port = free_port()
            down_env = env | {
                "CARPRICE_PREDICTION_LOG_URL": proxied,
                "CARPRICE_PREDICTION_LOG_QUEUE_MAX": "2000",
                "CARPRICE_PREDICTION_LOG_TIMEOUT": "2",
            }
            with server(serve_cmd(port), down_env, _ready(port), workdir / "down.log"):
                base = f"http://127.0.0.1:{port}"
                url = f"{base}/v1/predict"
                result = wrk(url, stream, "cycle", args, offset=offset, seconds=10, api_key=key)
                offset += result["requests"] + 1000
                text = scrape(base)
                dropped = metric_sum(text, "carprice_prediction_log_rows_dropped_total")
                errors = metric_sum(text, "carprice_prediction_log_write_errors_total")
                proxy.up = True
                started = time.monotonic()
                resumed = None
                while time.monotonic() - started < 60:
                    probe = f"resume-{secrets.token_hex(4)}"
                    _post(url, key, pool[int(time.monotonic() * 1000) % 50_000], probe)
                    time.sleep(0.5)
                    if probe in set(logged_ids(log_url)):
                        resumed = time.monotonic() - started
                        break
                report["unreachable"] = {
                    "requests": result["requests"],
                    "requests_per_s": result["requests_per_s"],
                    "failed_requests": result["errors"],
                    "p50_ms": result["p50_ms"],
                    "p99_ms": result["p99_ms"],
                    "max_ms": result["max_ms"],
                    "rows_dropped_counted": dropped,
                    "write_errors_counted": errors,
                    "resumed_after_s": resumed,
                    "rows_logged_after_resume": len(logged_ids(log_url)),
                }
                print(f"  unreachable: {json.dumps(report['unreachable'])}", flush=True)

    report["targets"] = _targets(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print()
    for t in report["targets"]:
        print(f"{'MET ' if t['met'] else 'MISS'} {t['target']}: {t['value']}")
    print(f"\nwritten to {args.out}")
    return 0 if all(t["met"] for t in report["targets"]) else 1


def _ready(port: int) -> str:
    return f"http://127.0.0.1:{port}/v2/health/ready"


def _post(url: str, key: str, car: dict[str, Any], request_id: str) -> int:
    body = json.dumps(car).encode()
    request = urllib.request.Request(  # noqa: S310 - 127.0.0.1 only
        url,
        data=body,
        headers={"Content-Type": "application/json", "X-API-Key": key, "X-Request-ID": request_id},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:  # noqa: S310
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _exact(base: str, key: str, n: int) -> dict[str, Any]:
    before = metric_sum(scrape(base), "http_requests_total", handler="/v1/predict")
    counter = iter(range(n))
    lock = threading.Lock()
    statuses: list[int] = []

    def client() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            car = {"brand": "Toyota", "model": "Corolla", "fuel_type": "Petrol",
                   "transmission": "Manual", "seller_type": "Dealer", "year": 2019,
                   "km_driven": 1000 + i, "doors": 4}  # fmt: skip
            status = _post(f"{base}/v1/predict", key, car, f"exact-{i}")
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seen = [
        metric_sum(scrape(base), "http_requests_total", handler="/v1/predict") - before
        for _ in range(10)
    ]
    return {"requests": n, "answered": len(statuses), "scrapes": seen}


def _drain(
    serve_cmd: Any,
    env: dict[str, str],
    log_url: str,
    key: str,
    pool: list[dict[str, Any]],
    args: argparse.Namespace,
    workdir: Path,
) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/predict"
    with (workdir / "drain.log").open("wb") as out:
        proc = subprocess.Popen(serve_cmd(port), cwd=ROOT, env=env, stdout=out, stderr=out)
        try:
            wait_http(_ready(port), 240, proc)
            answered: list[str] = []
            others: list[int] = []
            lock = threading.Lock()
            stop = threading.Event()

            def client(c: int) -> None:
                for i in range(10**9):
                    if stop.is_set():
                        return
                    rid = f"drain-{c}-{i}"
                    try:
                        status = _post(url, key, pool[(c * 2003 + i) % len(pool)], rid)
                    except OSError:
                        if proc.poll() is not None or stop.is_set():
                            return
                        time.sleep(0.01)
                        continue
                    with lock:
                        (answered.append(rid) if status == 200 else others.append(status))

            threads = [threading.Thread(target=client, args=(c,)) for c in range(20)]
            for t in threads:
                t.start()
            time.sleep(args.drain_seconds)
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(120)
            exit_s = time.monotonic() - signalled
            stop.set()
            for t in threads:
                t.join(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    logged = [r for r in logged_ids(log_url) if r.startswith("drain-")]
    return {
        "answered_200": len(answered),
        "other_statuses": len(others),
        "logged": len(logged),
        "logged_distinct": len(set(logged)),
        "answered_not_logged": len(set(answered) - set(logged)),
        "logged_not_answered": len(set(logged) - set(answered)),
        "exit_code": code,
        "exit_seconds_after_sigterm": round(exit_s, 2),
    }


def _targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets of the parts that ran (``--only``)."""
    targets: list[dict[str, Any]] = []
    for kind, name, floor in (("uncached", "uncached /v1/predict", 0.95),
                              ("cached", "cached /v1/predict", 0.95),
                              ("batch", "1,000-car batches", 0.90)):  # fmt: skip
        if kind in r.get("overhead", {}):
            o = r["overhead"][kind]
            targets.append(
                {
                    "target": f"{name} on/off >= {floor:.0%}",
                    "value": f"{o['ratio_median']:.1%} (CPU off/on {o['cpu_ratio_median']:.1%}, "
                    f"API processes alone {o['api_cpu_ratio_median']:.1%})",
                    "met": o["ratio_median"] >= floor,
                }
            )
    if "drain" in r:
        d = r["drain"]
        targets.append(
            {
                "target": "SIGTERM: ids answered 200 == logged ids, none twice",
                "value": f"{d['answered_200']} answered, {d['logged']} logged "
                f"({d['logged_distinct']} distinct), {d['answered_not_logged']} missing, "
                f"{d['logged_not_answered']} extra",
                "met": d["answered_not_logged"] == d["logged_not_answered"] == 0
                and d["logged"] == d["logged_distinct"] == d["answered_200"],
            }
        )
    if "unreachable" in r:
        u = r["unreachable"]
        targets += [
            {"target": "log DB unreachable: every prediction answered, p99 < 100 ms, drops counted",
             "value": f"{u['failed_requests']} failed of {u['requests']}, "
                      f"p99 {u['p99_ms']:.1f} ms, {u['rows_dropped_counted']:.0f} dropped counted",
             "met": u["failed_requests"] == 0 and u["p99_ms"] < 100
             and u["rows_dropped_counted"] > 0},
            {"target": "logging resumes by itself when the DB is back",
             "value": f"after {u['resumed_after_s']} s",
             "met": u["resumed_after_s"] is not None},
        ]  # fmt: skip
    if "exact" in r:
        e = r["exact"]
        targets.append(
            {
                "target": "2 workers: http_requests_total grew by exactly N in every scrape",
                "value": f"N={e['requests']}, scrapes {sorted(set(e['scrapes']))}",
                "met": all(s == e["requests"] for s in e["scrapes"]),
            }
        )
    return targets


if __name__ == "__main__":
    raise SystemExit(main())
