"""Operations benchmark: worker memory with one model and with the pinned LRU full, and a hot
swap of the production model under load.

Run ``python -m benchmarks.serving_ops`` (``make bench-ops``). It trains a model like the
pipeline's (``params.yaml``, 20,000 rows) into a temporary registry and registers it
``pinned_models_max + 1`` times (versions 1..5, version 1 as ``production``), then starts the
API with 2 uvicorn workers, auth, cache and access log on, as ``make bench`` does:

1. resident memory (``VmRSS``) of each worker after warm-up, one model loaded;
2. the same after pinning versions 2..5 through ``/v2/models/car-price/versions/{v}/infer``
   until every worker has loaded all of them (the LRU of ``CARPRICE_PINNED_MODELS_MAX`` = 4
   is then full), then a new pinned version again (one evicted, memory must not grow);
3. ``wrk`` on ``/v1/predict`` (distinct cars, 32 connections) while ``production`` moves from
   version 1 to version 2 a few seconds in (the poller checks every second): every request
   must succeed, and afterwards every answer must come from version 2.

Prints the figures and writes ``benchmarks/results/serving_ops.json``; exit status 1 if a
worker passes 500 MB or a request failed. Needs ``wrk``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.serving import (
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

RESULTS = ROOT / "benchmarks" / "results" / "serving_ops.json"
RSS_LIMIT_MB = 500


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def workers_of(port: int) -> list[int]:
    """PIDs of the uvicorn worker processes of the server listening on ``port``."""
    master = subprocess.run(
        ["pgrep", "-f", f"carprice serve --port {port}"], capture_output=True, text=True
    ).stdout.split()
    children = subprocess.run(
        ["pgrep", "-P", master[0]], capture_output=True, text=True
    ).stdout.split()
    # Not multiprocessing's resource tracker, also a child: the spawned workers only.
    return sorted(
        int(p) for p in children if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()
    )


def post(url: str, body: Any, key: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(  # noqa: S310 - 127.0.0.1 only
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-API-Key": key},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:  # noqa: S310
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def v2_body(car: dict[str, Any]) -> dict[str, Any]:
    inputs = []
    for name, value in car.items():
        datatype = "BYTES" if isinstance(value, str) else "FP64"
        inputs.append({"name": name, "shape": [1], "datatype": datatype, "data": [value]})
    return {"inputs": inputs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=12, help="seconds of load in the swap")
    parser.add_argument("--swap-after", type=float, default=4.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    return run_in_workdir(args, "carprice-bench-ops-", _run)


def _run(args: argparse.Namespace, workdir: Path) -> int:
    import mlflow

    print("training a temporary model (params.yaml, 20,000 rows) ...", flush=True)
    uri = temp_model(workdir)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    source = client.get_model_version(MODEL, "1").source
    pinned_max = 4
    for _ in range(pinned_max + 1):
        mlflow.register_model(source, MODEL)  # versions 2..6: the same model, loaded apart
    pool = cars(60_000, seed=7)
    one = next(c for c in pool if all(v is not None for v in c.values()))
    stream = write_lines(workdir / "stream.jsonl", pool[1000:])

    venv_bin = Path(sys.executable).parent
    env = os.environ | {
        "MLFLOW_TRACKING_URI": uri,
        "PYTHONUNBUFFERED": "1",
        "CARPRICE_ENV": "test",
        "CARPRICE_JWT_SECRET": secrets.token_hex(32),
        "CARPRICE_RELOAD_INTERVAL": "1",
        "CARPRICE_PINNED_MODELS_MAX": str(pinned_max),
    }
    env.pop("CARPRICE_CACHE_URL", None)
    key = api_key(env, workdir, venv_bin)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [str(venv_bin / "carprice"), "serve", "--port", str(port), "--workers", str(args.workers)]
    report: dict[str, Any] = {"workers": args.workers, "pinned_models_max": pinned_max}
    print(f"starting the API ({args.workers} workers) ...", flush=True)
    with server(cmd, env, f"{base}/v2/health/ready", workdir / "api.log"):
        wrk(f"{base}/v1/predict", stream, "cycle", args, seconds=3, api_key=key)
        pids = workers_of(port)
        report["rss_mb_one_model"] = [round(rss_mb(p), 1) for p in pids]
        print(f"  RSS, one model: {report['rss_mb_one_model']} MB", flush=True)

        # Pin versions 2..5: 40 requests each, on new connections, reach every worker.
        for version in range(2, 2 + pinned_max):
            url = f"{base}/v2/models/{MODEL}/versions/{version}/infer"
            for _ in range(40):
                status, _body = post(url, v2_body(one), key)
                assert status == 200, (status, _body)
        report["rss_mb_lru_full"] = [round(rss_mb(p), 1) for p in pids]
        print(f"  RSS, LRU of {pinned_max} pinned + production: {report['rss_mb_lru_full']} MB")
        url = f"{base}/v2/models/{MODEL}/versions/{2 + pinned_max}/infer"
        for _ in range(40):
            assert post(url, v2_body(one), key)[0] == 200
        report["rss_mb_after_eviction"] = [round(rss_mb(p), 1) for p in pids]
        print(f"  RSS, after one eviction: {report['rss_mb_after_eviction']} MB", flush=True)

        print(f"  hot swap to version 2 under load ({args.duration} s) ...", flush=True)

        def swap() -> None:
            time.sleep(args.swap_after)
            client.set_registered_model_alias(MODEL, "production", "2")

        swapper = threading.Thread(target=swap)
        swapper.start()
        load = wrk(
            f"{base}/v1/predict", stream, "cycle", args, offset=30_000, seconds=args.duration,
            api_key=key,
        )  # fmt: skip
        swapper.join()
        versions = {
            post(f"{base}/v1/predict", pool[i], key)[1].get("model_version") for i in range(40)
        }
        report["swap"] = load | {"versions_after": sorted(str(v) for v in versions)}
        print(f"  {json.dumps(report['swap'])}", flush=True)

    peak = max(report["rss_mb_lru_full"] + report["rss_mb_after_eviction"])
    ok = peak < RSS_LIMIT_MB and report["swap"]["errors"] == 0 and versions == {"2"}
    report["met"] = ok
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\n{'met' if ok else 'NOT MET'}: peak worker RSS {peak:.0f} MB (limit {RSS_LIMIT_MB}), "
          f"{report['swap']['errors']} failed requests during the swap, versions after: "
          f"{report['swap']['versions_after']}; written to {args.out}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
