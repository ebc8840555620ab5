"""What each serving knob is worth: the API's three loads with one setting changed at a time.

Run ``python -m benchmarks.serving_knobs`` (``make bench-knobs``, ~12 minutes). A reference
API with the defaults runs throughout; for each configuration below a second API is started
with that one setting changed (2 uvicorn workers each unless the configuration says
otherwise; auth, cache and access log on). The two are measured in alternation, in short
slices (``wrk``, 32 connections): ``/v1/predict`` with distinct cars (uncached), with one car
(cached), and ``/v1/predict/batch`` with 1,000 distinct cars. Each figure is reported as the
variant's value and its ratio to the reference measured beside it (median over ``--rounds``);
on a machine whose speed drifts by 2x within minutes (seen here), only the ratio means much.
The first configuration changes nothing: its ratios show the noise.

Prints a table and writes ``benchmarks/results/serving_knobs.json``. Needs ``wrk``; the Redis
row needs Redis on 127.0.0.1:6379 (it uses DB 5 and empties it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import statistics
import sys
from pathlib import Path
from typing import Any

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
    write_lines,
    wrk,
)

RESULTS = ROOT / "benchmarks" / "results" / "serving_knobs.json"
REDIS = "redis://127.0.0.1:6379/5"

# (label, environment overrides, uvicorn workers)
CONFIGS: list[tuple[str, dict[str, str], int]] = [
    ("defaults (A/A: the noise)", {}, 2),
    ("CARPRICE_FAST_LANE=false", {"CARPRICE_FAST_LANE": "false"}, 2),
    ("CARPRICE_COMPILED_PREDICT=false", {"CARPRICE_COMPILED_PREDICT": "false"}, 2),
    ("CARPRICE_MICROBATCH_MAX_ROWS=1", {"CARPRICE_MICROBATCH_MAX_ROWS": "1"}, 2),
    ("CARPRICE_MICROBATCH_WAIT_MS=1", {"CARPRICE_MICROBATCH_WAIT_MS": "1"}, 2),
    ("CARPRICE_GC_FREEZE=false", {"CARPRICE_GC_FREEZE": "false"}, 2),
    ("CARPRICE_MODEL_THREADS=2", {"CARPRICE_MODEL_THREADS": "2"}, 2),
    ("CARPRICE_LOG_LEVEL=WARNING (no access log)", {"CARPRICE_LOG_LEVEL": "WARNING"}, 2),
    ("CARPRICE_CACHE_URL=redis (cache + limits)", {"CARPRICE_CACHE_URL": REDIS}, 2),
    ("--workers 1", {}, 1),
]
LOADS = ("uncached", "cached", "batch")


def flush_redis() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS, socket_timeout=2).flushdb()
    except redis.RedisError as exc:
        print(f"  (Redis not reachable: {exc})", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=4, help="seconds per slice")
    parser.add_argument("--rounds", type=int, default=2, help="slices per side and load")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--temp-model", action="store_true", help="train a model here")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    return run_in_workdir(args, "carprice-bench-knobs-", _run)


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
    offset = 0

    def load(url: str, kind: str) -> dict[str, Any]:
        """One slice of one load; returns wrk's figures with ``value`` (req/s or rows/s)."""
        nonlocal offset
        if kind == "cached":
            wrk(url, single, "single", args, seconds=1, api_key=key)
            result = wrk(url, single, "single", args, api_key=key)
        elif kind == "uncached":
            result = wrk(url, stream, "cycle", args, offset=offset, api_key=key)
        else:
            result = wrk(f"{url}/batch", batch, "perturb", args, offset=offset, api_key=key)
        offset += result["requests"] + 1000
        rows = 1000 if kind == "batch" else 1
        return result | {"value": result["requests_per_s"] * rows}

    def start(stack: contextlib.ExitStack, workers: int, overrides: dict[str, str]) -> str:
        port = free_port()
        cmd = [str(venv_bin / "carprice"), "serve", "--port", str(port), "--workers", str(workers)]
        ready = f"http://127.0.0.1:{port}/v2/health/ready"
        stack.enter_context(server(cmd, env | overrides, ready, workdir / f"api-{port}.log"))
        url = f"http://127.0.0.1:{port}/v1/predict"
        wrk(url, stream, "cycle", args, offset=offset + 900_000, seconds=2, api_key=key)
        return url

    out: list[dict[str, Any]] = []
    with contextlib.ExitStack() as outer:
        reference_url = start(outer, 2, {})
        for label, overrides, workers in CONFIGS:
            print(f"{label} ...", flush=True)
            if "CARPRICE_CACHE_URL" in overrides:
                flush_redis()
            with contextlib.ExitStack() as inner:
                variant_url = start(inner, workers, overrides)
                row: dict[str, Any] = {"config": label, "errors": 0}
                for kind in LOADS:
                    ratios, values, p99s = [], [], []
                    for r in range(args.rounds):
                        sides = [(variant_url, True), (reference_url, False)]
                        got = {}
                        for url, is_variant in sides if r % 2 == 0 else reversed(sides):
                            got[is_variant] = load(url, kind)
                            row["errors"] += got[is_variant]["errors"]
                        ratios.append(got[True]["value"] / got[False]["value"])
                        values.append(got[True]["value"])
                        p99s.append(got[True]["p99_ms"])
                    row[kind] = statistics.median(values)
                    row[f"{kind}_ratio"] = statistics.median(ratios)
                    row[f"{kind}_p99_ms"] = statistics.median(p99s)
            out.append(row)
            print(f"  {json.dumps(row)}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": uri, "rounds": args.rounds, "rows": out}, indent=2))
    print()
    print("value (ratio to the defaults measured beside it), p99 ms")
    print(f"{'configuration':<44}{'uncached req/s':>24}{'cached req/s':>24}"
          f"{'batch rows/s':>24}{'errors':>8}")  # fmt: skip
    for r in out:
        cells = "".join(f"{_cell(r, k):>24}" for k in LOADS)
        print(f"{r['config']:<44}{cells}{r['errors']:>8}")
    print(f"\nwritten to {args.out}")
    return 0


def _cell(row: dict[str, Any], load: str) -> str:
    return f"{row[load]:.0f} ({row[load + '_ratio']:.2f}x) {row[load + '_p99_ms']:.0f}"


if __name__ == "__main__":
    sys.exit(main())
