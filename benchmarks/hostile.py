"""Hostile clients beside legitimate ones: issue 14's targets, on `carprice serve --workers 2`.

Each round runs two 10 s phases on one server:

* **normal**: uncached ``POST /v1/predict`` traffic (wrk, new cars all along) and a
  ``GET /v2/health/live`` probe;
* **attack**: the same, plus 16 concurrent hostile clients with a *bogus* key and 16 with a
  *valid* one, each sending, in turn, the bodies the fuzzing found expensive: an 800 KB array
  (``[0,0,...]``, 400,000 items), an object of 100,000 keys, 100,000 levels of nesting, and
  1,000 levels.

Reported per round: the probe's p50/p99/max, the legitimate throughput under attack as a
share of the normal one, the workers' RSS growth (before the attack -> its peak), the hostile
requests answered and their statuses (a 5xx fails the run). The targets: probe p99 < 50 ms,
RSS growth < 50 MB a worker, >= 70 % of the normal throughput. The probe and the hostile
clients run in their own processes, so their own Python does not skew what they measure.

``make bench-hostile`` (needs wrk; ``--temp-model`` trains a model if there is no
``mlruns/``). Writes ``benchmarks/results/hostile.json``. On a shared machine the figures move
with the neighbours' load: run it more than once (``--rounds``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import secrets
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.serving import (
    DEFAULT_URI,
    ROOT,
    api_key,
    cars,
    free_port,
    run_in_workdir,
    server,
    temp_model,
    write_lines,
    wrk,
)

RESULTS = ROOT / "benchmarks" / "results" / "hostile.json"
BOGUS_KEY = "cpk_0123456789_" + "x" * 43
TARGETS = {"probe_p99_ms": 50.0, "rss_growth_mb": 50.0, "throughput_ratio": 0.7}


def hostile_bodies() -> list[tuple[str, str, bytes]]:
    """(name, path, body) of each hostile request kind."""
    array = b"[" + b",".join([b"0"] * 400_000) + b"]"
    keys = json.dumps({f"k{i}": 0 for i in range(100_000)}).encode()
    return [
        ("800KB array", "/v1/predict/batch", array),
        ("100k keys", "/v1/predict", keys),
        ("nesting 100k", "/v1/predict/batch", b"[" * 100_000 + b"]" * 100_000),
        ("nesting 1k", "/v2/models/car-price/infer", b"[" * 1_000 + b"]" * 1_000),
        ("800KB array v2", "/v2/models/car-price/infer", array),
    ]


def _hostile_client(port: int, key: str, seconds: float, out: Any) -> None:
    bodies = hostile_bodies()
    statuses: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    i = 0
    while time.monotonic() < deadline:
        _name, path, body = bodies[i % len(bodies)]
        i += 1
        headers = {"Content-Type": "application/json", "X-API-Key": key}
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            statuses[str(response.status)] += 1
            if response.getheader("connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        except (OSError, http.client.HTTPException):
            statuses["socket error"] += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.close()
    out.put(dict(statuses))


def _hostile_process(port: int, keys: list[str], seconds: float, out: Any) -> None:
    """One process of hostile clients: a thread per key (they wait on sockets, not the GIL)."""
    inner: Any = __import__("queue").Queue()
    threads = [
        threading.Thread(target=_hostile_client, args=(port, key, seconds, inner)) for key in keys
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total: Counter[str] = Counter()
    while not inner.empty():
        total.update(inner.get())
    out.put(dict(total))


def _probe(port: int, seconds: float, out: Any) -> None:
    """GET /v2/health/live every 10 ms on a new connection (so it lands on any worker)."""
    latencies = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/v2/health/live")
        conn.getresponse().read()
        conn.close()
        latencies.append((time.perf_counter() - started) * 1000)
        time.sleep(0.01)
    out.put(latencies)


def _workers(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    # uvicorn's workers are spawned interpreters; multiprocessing's resource tracker is not one.
    return [
        int(p)
        for p in children
        if b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()
    ]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _server_pid(port: int) -> int:
    # The supervisor: the process whose command line names the port.
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"serve" in cmd and str(port).encode() in cmd and any(b"carprice" in c for c in cmd):
                return int(entry.name)
    raise RuntimeError(f"no carprice serve on port {port}")


def phase(
    args: argparse.Namespace, port: int, stream: Path, key: str, offset: int, attack: bool
) -> dict[str, Any]:
    """One phase: legit wrk traffic and the probe (and the hostile clients if ``attack``)."""
    ctx = mp.get_context("spawn")
    out: Any = ctx.Queue()
    seconds = args.duration
    procs = [ctx.Process(target=_probe, args=(port, seconds, out))]
    if attack:
        for keys in ([BOGUS_KEY] * args.hostile, [key] * args.hostile):
            procs.append(ctx.Process(target=_hostile_process, args=(port, keys, seconds, out)))
    workers = _workers(_server_pid(port))
    rss_before = {w: _rss_mb(w) for w in workers}
    peak = dict(rss_before)
    for p in procs:
        p.start()
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.2):
            for w in workers:
                peak[w] = max(peak[w], _rss_mb(w))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    url = f"http://127.0.0.1:{port}/v1/predict"
    legit = wrk(url, stream, "cycle", args, offset=offset, seconds=seconds, api_key=key)
    results = [out.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join(30)
    stop.set()
    watcher.join(2)
    latencies = next(r for r in results if isinstance(r, list))
    statuses: Counter[str] = Counter()
    for r in results:
        if isinstance(r, dict):
            statuses.update(r)
    ordered = sorted(latencies)
    return {
        "legit_requests_per_s": legit["requests_per_s"],
        "legit_p99_ms": legit["p99_ms"],
        "legit_errors": legit["errors"],
        "probe_count": len(ordered),
        "probe_p50_ms": statistics.median(ordered),
        "probe_p99_ms": ordered[int(len(ordered) * 0.99)],
        "probe_max_ms": ordered[-1],
        "rss_growth_mb": max(peak[w] - rss_before[w] for w in workers),
        "rss_before_mb": rss_before,
        "hostile_statuses": dict(statuses),
        "hostile_per_s": sum(statuses.values()) / seconds,
    }


def _run(args: argparse.Namespace, workdir: Path) -> int:
    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    if args.temp_model:
        print("training a temporary model (params.yaml, 20,000 rows) ...", flush=True)
        uri = temp_model(workdir)
    pool = cars(60_000, seed=7)
    stream = write_lines(workdir / "stream.jsonl", pool)
    venv_bin = Path(sys.executable).parent
    env = os.environ | {
        "MLFLOW_TRACKING_URI": uri,
        "CARPRICE_ENV": "test",
        "CARPRICE_JWT_SECRET": secrets.token_hex(32),
        "CARPRICE_RELOAD_INTERVAL": "3600",
        "CARPRICE_LOG_LEVEL": "WARNING",  # the access log is not what is measured
        "CARPRICE_REGISTRY_TIMEOUT": "60",  # a shared machine's SQLite registry can be slow
    }
    env.pop("CARPRICE_CACHE_URL", None)
    key = api_key(env, workdir, venv_bin)
    port = free_port()
    cmd = [str(venv_bin / "carprice"), "serve", "--port", str(port), "--workers", "2"]
    rounds = []
    with server(cmd, env, f"http://127.0.0.1:{port}/v2/health/ready", workdir / "api.log"):
        wrk(f"http://127.0.0.1:{port}/v1/predict", stream, "cycle", args, seconds=2, api_key=key)
        offset = 10_000_000
        for n in range(args.rounds):
            normal = phase(args, port, stream, key, offset, attack=False)
            offset += 10_000_000
            attack = phase(args, port, stream, key, offset, attack=True)
            offset += 10_000_000
            ratio = attack["legit_requests_per_s"] / normal["legit_requests_per_s"]
            rounds.append({"normal": normal, "attack": attack, "throughput_ratio": ratio})
            print(
                f"round {n + 1}: probe p99 {normal['probe_p99_ms']:.1f} -> "
                f"{attack['probe_p99_ms']:.1f} ms (max {attack['probe_max_ms']:.1f}), legit "
                f"{normal['legit_requests_per_s']:.0f} -> {attack['legit_requests_per_s']:.0f}"
                f" req/s ({ratio:.2f}x), RSS +{attack['rss_growth_mb']:.1f} MB, hostile "
                f"{attack['hostile_per_s']:.0f} req/s {attack['hostile_statuses']}",
                flush=True,
            )
    worst = {
        "probe_p99_ms": max(r["attack"]["probe_p99_ms"] for r in rounds),
        "rss_growth_mb": max(r["attack"]["rss_growth_mb"] for r in rounds),
        "throughput_ratio": statistics.median(r["throughput_ratio"] for r in rounds),
    }
    server_errors = sum(
        n for r in rounds for s, n in r["attack"]["hostile_statuses"].items() if s.startswith("5")
    )
    met = {
        "probe_p99_ms": worst["probe_p99_ms"] < TARGETS["probe_p99_ms"],
        "rss_growth_mb": worst["rss_growth_mb"] < TARGETS["rss_growth_mb"],
        "throughput_ratio": worst["throughput_ratio"] >= TARGETS["throughput_ratio"],
        "no_server_errors": server_errors == 0,
    }
    report = {
        "rounds": rounds,
        "worst": worst,
        "targets": TARGETS,
        "met": met,
        "load_average": os.getloadavg(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps({"worst": worst, "met": met, "load_average": os.getloadavg()}, indent=2))
    return 0 if all(met.values()) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per phase")
    parser.add_argument("--hostile", type=int, default=16, help="hostile clients of each kind")
    parser.add_argument("--connections", type=int, default=16, help="legit wrk connections")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--temp-model", action="store_true", help="train a model here")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return run_in_workdir(parser.parse_args(), "carprice-hostile-", _run)


if __name__ == "__main__":
    sys.exit(main())
