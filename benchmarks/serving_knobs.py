"""What each serving knob is worth: the API's three loads with one setting changed at a time.

Run ``python benchmarks/serving_knobs.py`` (``make bench-knobs``, ~8 minutes). For each
configuration below the API is started afresh (2 uvicorn workers unless the configuration says
otherwise, auth, cache and access log on) and measured as ``make bench`` measures it: ``wrk``
with 32 connections on ``/v1/predict`` with distinct cars (uncached), with one car (cached),
and on ``/v1/predict/batch`` with 1,000 distinct cars. The defaults run first and last: the
difference between those two rows is the noise of the machine.

Prints a table and writes ``benchmarks/results/serving_knobs.json``. Needs ``wrk``; the Redis
row needs Redis on 127.0.0.1:6379 (it uses DB 5 and empties it).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(ROOT)  # as in benchmarks/serving.py: the project root, not this folder

from benchmarks.serving import (  # noqa: E402 - after the sys.path fix above
    DEFAULT_URI,
    MODEL,
    api_key,
    cars,
    free_port,
    server,
    temp_model,
    write_lines,
    wrk,
)

RESULTS = ROOT / "benchmarks" / "results" / "serving_knobs.json"
REDIS = "redis://127.0.0.1:6379/5"

# (label, environment overrides, uvicorn workers)
CONFIGS: list[tuple[str, dict[str, str], int]] = [
    ("defaults", {}, 2),
    ("CARPRICE_FAST_LANE=false", {"CARPRICE_FAST_LANE": "false"}, 2),
    ("CARPRICE_COMPILED_PREDICT=false", {"CARPRICE_COMPILED_PREDICT": "false"}, 2),
    ("CARPRICE_MICROBATCH_MAX_ROWS=1", {"CARPRICE_MICROBATCH_MAX_ROWS": "1"}, 2),
    ("CARPRICE_MICROBATCH_WAIT_MS=1", {"CARPRICE_MICROBATCH_WAIT_MS": "1"}, 2),
    ("CARPRICE_GC_FREEZE=false", {"CARPRICE_GC_FREEZE": "false"}, 2),
    ("CARPRICE_MODEL_THREADS=2", {"CARPRICE_MODEL_THREADS": "2"}, 2),
    ("CARPRICE_LOG_LEVEL=WARNING (no access log)", {"CARPRICE_LOG_LEVEL": "WARNING"}, 2),
    ("CARPRICE_CACHE_URL=redis (cache + limits)", {"CARPRICE_CACHE_URL": REDIS}, 2),
    ("--workers 1", {}, 1),
    ("--workers 4", {}, 4),
    ("defaults (again)", {}, 2),
]


def flush_redis() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS, socket_timeout=2).flushdb()
    except redis.RedisError as exc:
        print(f"  (Redis not reachable: {exc})", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8, help="seconds per load")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--temp-model", action="store_true", help="train a model here")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk (Debian/Ubuntu)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="carprice-bench-knobs-"))
    args.workdir = str(workdir)
    try:
        return _run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run(args: argparse.Namespace, workdir: Path) -> int:
    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    if args.temp_model:
        uri = temp_model(workdir)
    print(f"model: {MODEL}@production from {uri}", flush=True)
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
        "CARPRICE_RELOAD_INTERVAL": "3600",
    }
    env = {k: v for k, v in env.items() if k != "CARPRICE_CACHE_URL"}
    key = api_key(env, workdir, venv_bin)
    rows: list[dict[str, Any]] = []
    offset = 0
    for label, overrides, workers in CONFIGS:
        print(f"{label} ...", flush=True)
        if "CARPRICE_CACHE_URL" in overrides:
            flush_redis()
        port = free_port()
        url = f"http://127.0.0.1:{port}/v1/predict"
        cmd = [str(venv_bin / "carprice"), "serve", "--port", str(port), "--workers", str(workers)]
        log = workdir / "api.log"
        with server(cmd, env | overrides, f"http://127.0.0.1:{port}/v2/health/ready", log):
            wrk(url, stream, "cycle", args, offset=offset, seconds=3, api_key=key)
            offset += 20_000
            uncached = wrk(url, stream, "cycle", args, offset=offset, api_key=key)
            offset += uncached["requests"] + 1000
            wrk(url, single, "single", args, seconds=2, api_key=key)
            cached = wrk(url, single, "single", args, api_key=key)
            many = wrk(f"{url}/batch", batch, "perturb", args, offset=offset, api_key=key)
            offset += many["requests"] + 1000
        rows.append(
            {
                "config": label,
                "uncached_rps": uncached["requests_per_s"],
                "uncached_p99_ms": uncached["p99_ms"],
                "cached_rps": cached["requests_per_s"],
                "cached_p99_ms": cached["p99_ms"],
                "batch_rows_per_s": many["requests_per_s"] * 1000,
                "errors": uncached["errors"] + cached["errors"] + many["errors"],
            }
        )
        print(f"  {json.dumps(rows[-1])}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": uri, "rows": rows}, indent=2))
    print()
    print(f"{'configuration':<44}{'uncached':>10}{'p99 ms':>8}{'cached':>10}{'p99 ms':>8}"
          f"{'batch rows/s':>14}{'errors':>8}")  # fmt: skip
    for r in rows:
        print(f"{r['config']:<44}{r['uncached_rps']:>10.0f}{r['uncached_p99_ms']:>8.1f}"
              f"{r['cached_rps']:>10.0f}{r['cached_p99_ms']:>8.1f}"
              f"{r['batch_rows_per_s']:>14.0f}{r['errors']:>8}")  # fmt: skip
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
