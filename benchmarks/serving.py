"""Serving benchmark: this API against ``mlflow models serve``, a constant FastAPI endpoint and
the model's own in-process ``predict``, side by side on the same model and the same car.

Run ``python benchmarks/serving.py`` (``make bench``). Every HTTP scenario runs ``wrk`` with
32 connections for ``--duration`` seconds (after a short warm-up) against servers with 2
uvicorn workers on 127.0.0.1:

* ``api uncached``: ``POST /v1/predict``, a stream of distinct cars drawn like the training
  data (the cache is on, every request misses);
* ``api cached``: ``POST /v1/predict``, one car repeated (every request after the first hits);
* ``api batch uncached``: ``POST /v1/predict/batch`` with 1,000 cars, a few kilometres
  changed per request so every row misses; ``api batch cached``: the same body repeated;
* ``mlflow models serve``: ``POST /invocations`` with the same car (``dataframe_records``);
* ``fastapi constant``: the same ``Car`` validation returning a constant (the ceiling);
* ``in-process``: the model's pipeline ``predict`` on one row and on 1,000 rows, and the
  serving path (rows -> frame -> predict) on the same.

The model is ``models:/car-price@production`` of ``MLFLOW_TRACKING_URI`` (default: the
project's ``mlruns/mlflow.db``, run ``make train`` first), or with ``--temp-model`` one trained
here with ``params.yaml``'s hyper-parameters into a temporary registry. Prints requests/s,
rows/s, p50/p99 and the ratios, and writes ``benchmarks/results/serving.json``.

Needs ``wrk`` (Debian: ``apt-get install -y wrk``). Targets 127.0.0.1 only; bounded in time.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    # Run as a script, this folder is first on sys.path and this file's name would shadow
    # the ``serving`` package: look in the project root instead.
    sys.path[0] = str(ROOT)
RESULTS = ROOT / "benchmarks" / "results" / "serving.json"
DEFAULT_URI = f"sqlite:///{ROOT / 'mlruns' / 'mlflow.db'}"
MODEL = "car-price"

WRK_SCRIPT = r"""
-- args: bodies file, mode (cycle | perturb | single), start offset, threads[, API key]
local threads = {}
local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  bodies = {}
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  mode = args[2]
  n = tonumber(args[3])
  nthreads = tonumber(args[4])
  hits = 0
  responses = 0
  bad = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if args[5] ~= nil and args[5] ~= "" then wrk.headers["X-API-Key"] = args[5] end
end

function request()
  local body
  local k = n * nthreads + id
  n = n + 1
  if mode == "cycle" then
    body = bodies[(k % #bodies) + 1]
  elseif mode == "perturb" then
    body = string.gsub(bodies[1], '"km_driven":(%d+)%.?%d*', function(km)
      local v = tonumber(km) + k + 1
      if v > 999000 then v = tonumber(km) - k - 1 end
      return '"km_driven":' .. v
    end)
  else
    body = bodies[1]
  end
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  responses = responses + 1
  if status ~= 200 then bad = bad + 1 end
  if body ~= nil and string.find(body, '"cached":true', 1, true) then hits = hits + 1 end
end

function done(summary, latency, requests)
  local h, r, b = 0, 0, 0
  for _, t in ipairs(threads) do
    h = h + t:get("hits")
    r = r + t:get("responses")
    b = b + t:get("bad")
  end
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"non2xx":%d,"socket_errors":%d,"cached":%d,"responses":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.status, e.connect + e.read + e.write + e.timeout, h, r))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - 127.0.0.1 only
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout} s")


@contextmanager
def server(cmd: list[str], env: dict[str, str], ready_url: str, log: Path) -> Iterator[None]:
    """Start a server process, wait until ``ready_url`` answers 200, stop it afterwards."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_http(ready_url, 240, proc)
            yield
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wrk(
    url: str,
    bodies: Path,
    mode: str,
    args: argparse.Namespace,
    offset: int = 0,
    seconds: float = 0,
    api_key: str = "",
) -> dict[str, Any]:
    script = Path(args.workdir) / "bench.lua"
    script.write_text(WRK_SCRIPT)
    duration = seconds or args.duration
    cmd = [
        "wrk",
        f"-t{args.wrk_threads}",
        f"-c{args.connections}",
        f"-d{max(1, round(duration))}s",  # wrk takes whole seconds only
        "--timeout",
        "30s",
        "-s",
        str(script),
        url,
        "--",
        str(bodies),
        mode,
        str(offset),
        str(args.wrk_threads),
        api_key,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    raw = json.loads(line.removeprefix("RESULT "))
    seconds_run = raw["duration_us"] / 1e6
    return {
        "requests_per_s": raw["requests"] / seconds_run,
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "requests": raw["requests"],
        "errors": raw["non2xx"] + raw["socket_errors"],
        "cached_responses": raw["cached"],
    }


def write_lines(path: Path, bodies: list[Any]) -> Path:
    path.write_text("\n".join(json.dumps(b, separators=(",", ":")) for b in bodies) + "\n")
    return path


def cars(rows: int, seed: int) -> list[dict[str, Any]]:
    """Distinct cars drawn like the training data (cleaned as the pipeline cleans them)."""
    import numpy as np
    import pandas as pd

    from pipelines.contract import FEATURES, build_contract
    from pipelines.preprocess import clean
    from pipelines.synthetic import generate
    from serving.features import BY_NAME

    df, _ = clean(generate(rows, seed).listings, build_contract(min_rows=1))
    df = df.drop_duplicates(subset=list(FEATURES))
    out = []
    for record in df[list(FEATURES)].to_dict(orient="records"):
        car: dict[str, Any] = {}
        for k, v in record.items():
            if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
                car[str(k)] = None
            elif isinstance(v, int | float | np.integer | np.floating):
                # As a JSON client sends them: 2019 for an integer field, 16.5 for a float one.
                car[str(k)] = int(v) if BY_NAME[str(k)].kind == "integer" else float(v)
            else:
                car[str(k)] = str(v)
        out.append(car)
    return out


def api_key(env: dict[str, str], workdir: Path, venv_bin: Path) -> str:
    """A user of the predict role in a throw-away user database, and an API key for it.

    Sets the API's database and a rate limit the benchmark cannot reach in ``env``.
    """
    env["CARPRICE_DATABASE_URL"] = f"sqlite:///{workdir / 'users.db'}"
    env["CARPRICE_RATE_LIMIT"] = "1000000000/minute"
    carprice = str(venv_bin / "carprice")
    subprocess.run(
        [carprice, "users", "create", "bench", "--role", "predict", "--password-stdin"],
        input=secrets.token_urlsafe(24) + "\n",
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    created = subprocess.run(
        [carprice, "keys", "create", "--user", "bench"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return created.stdout.strip().splitlines()[-1]


def temp_model(workdir: Path) -> str:
    """Train a model like the pipeline's (params.yaml) on 20,000 generated rows, register it
    as car-price@production in a temporary registry; returns the tracking URI."""
    import mlflow
    from threadpoolctl import threadpool_limits

    from pipelines.contract import build_contract
    from pipelines.params import load_params
    from pipelines.preprocess import clean
    from pipelines.synthetic import generate
    from pipelines.train import fit, log_run, split_xy

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment(MODEL, artifact_location=(workdir / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=exp)
    params = load_params(ROOT / "params.yaml")
    contract = build_contract(min_rows=1)
    df, _ = clean(generate(20_000, 42).listings, contract)
    x, y = split_xy(df)
    with threadpool_limits(1):
        model = fit(params.train, contract, x, y)
    run = log_run(model, params, contract, {}, x.head(5), x.head(500), {"stage": "benchmark"})
    version = mlflow.register_model(run["model_uri"], MODEL).version
    mlflow.MlflowClient().set_registered_model_alias(MODEL, "production", str(version))
    return uri


def in_process(
    uri: str, one: dict[str, Any], thousand: list[dict[str, Any]], seconds: float
) -> dict[str, Any]:
    """Time the model's own predict and the serving path, in this process, one thread."""
    from serving.features import make_row
    from serving.model import load_version, to_frame
    from serving.registry import Registry

    registry = Registry(uri, MODEL, 30)
    info = registry.version_for_alias("production")
    assert info is not None, f"no {MODEL}@production in {uri}"
    model = load_version(registry, info, threads=1)
    one_rows = [make_row(one)]
    many_rows = [make_row(c) for c in thousand]
    one_frame, many_frame = to_frame(one_rows), to_frame(many_rows)

    def pipeline_predict(frame: Any) -> Callable[[], Any]:
        def call() -> Any:
            from serving.model import _openmp

            with _openmp().limit(limits=1, user_api="openmp"):
                return model.estimator.predict(frame)

        return call

    out = {}
    cases: list[tuple[str, Callable[[], Any], int]] = [
        ("model predict, 1 row", pipeline_predict(one_frame), 1),
        ("model predict, 1000 rows", pipeline_predict(many_frame), len(many_rows)),
        ("serving path, 1 row", lambda: model.predict(one_rows), 1),
        ("serving path, 1000 rows", lambda: model.predict(many_rows), len(many_rows)),
    ]
    for name, call, rows in cases:
        for _ in range(3):
            call()
        times = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(times) < 20:
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        times.sort()
        p50 = statistics.median(times)
        out[name] = {
            "requests_per_s": len(times) / sum(times),
            "rows_per_s": rows * len(times) / sum(times),
            "p50_ms": p50 * 1000,
            "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))] * 1000,
            "calls": len(times),
        }
    return {"version": info.version, "results": out}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per scenario")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers per server")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--temp-model", action="store_true", help="train a model here")
    parser.add_argument(
        "--cache-url", default=None, help="Redis URL for the API (default: in-process)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk (Debian/Ubuntu)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="carprice-bench-"))
    args.workdir = str(workdir)
    try:
        return _run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run(args: argparse.Namespace, workdir: Path) -> int:
    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    if args.temp_model:
        print("training a temporary model (params.yaml, 20,000 rows) ...", flush=True)
        uri = temp_model(workdir)
    print(f"model: {MODEL}@production from {uri}", flush=True)

    pool = cars(60_000, seed=7)
    one = next(c for c in pool if all(v is not None for v in c.values()))
    batch = pool[:1000]
    stream = write_lines(workdir / "stream.jsonl", pool[1000:])
    single = write_lines(workdir / "single.jsonl", [one])
    batch_file = write_lines(workdir / "batch.jsonl", [batch])
    mlflow_single = write_lines(workdir / "mlflow.jsonl", [{"dataframe_records": [one]}])

    results: dict[str, dict[str, Any]] = {}
    venv_bin = Path(sys.executable).parent
    base_env = os.environ | {
        "MLFLOW_TRACKING_URI": uri,
        "PYTHONUNBUFFERED": "1",
        # mlflow models serve runs a bare ``uvicorn``: it must find the venv's.
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
    }

    # --- this API ---
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    api_env = base_env | {
        "CARPRICE_ENV": "test",
        "CARPRICE_JWT_SECRET": secrets.token_hex(32),
        "CARPRICE_RELOAD_INTERVAL": "3600",
    }
    api_env.pop("CARPRICE_CACHE_URL", None)
    if args.cache_url:
        api_env["CARPRICE_CACHE_URL"] = args.cache_url
    key = api_key(api_env, workdir, venv_bin)
    cmd = [str(venv_bin / "carprice"), "serve", "--port", str(port), "--workers", str(args.workers)]
    print(f"starting the API ({args.workers} workers) ...", flush=True)
    with server(cmd, api_env, f"{url}/v2/health/ready", workdir / "api.log"):
        # Each worker loads its model in the background: warm until both answer.
        wrk(f"{url}/v1/predict", stream, "cycle", args, offset=0, seconds=3, api_key=key)
        run = "api uncached"
        print(f"  {run}", flush=True)
        results[run] = wrk(
            f"{url}/v1/predict", stream, "cycle", args, offset=5_000, api_key=key
        ) | {"rows": 1}
        run = "api cached"
        print(f"  {run}", flush=True)
        wrk(f"{url}/v1/predict", single, "single", args, seconds=2, api_key=key)
        results[run] = wrk(f"{url}/v1/predict", single, "single", args, api_key=key) | {"rows": 1}
        run = "api batch uncached"
        print(f"  {run}", flush=True)
        results[run] = wrk(f"{url}/v1/predict/batch", batch_file, "perturb", args, api_key=key) | {
            "rows": 1000
        }
        run = "api batch cached"
        print(f"  {run}", flush=True)
        wrk(f"{url}/v1/predict/batch", batch_file, "single", args, seconds=2, api_key=key)
        results[run] = wrk(f"{url}/v1/predict/batch", batch_file, "single", args, api_key=key) | {
            "rows": 1000
        }

    # --- mlflow models serve ---
    port = free_port()
    cmd = [
        str(venv_bin / "mlflow"), "models", "serve", "-m", f"models:/{MODEL}@production",
        "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", str(args.workers),
    ]  # fmt: skip
    print("starting mlflow models serve ...", flush=True)
    with server(cmd, base_env, f"http://127.0.0.1:{port}/health", workdir / "mlflow.log"):
        invocations = f"http://127.0.0.1:{port}/invocations"
        wrk(invocations, mlflow_single, "single", args, seconds=3)
        print("  mlflow models serve", flush=True)
        results["mlflow models serve"] = wrk(invocations, mlflow_single, "single", args) | {
            "rows": 1
        }

    # --- the framework's ceiling ---
    port = free_port()
    cmd = [
        sys.executable, "-m", "uvicorn", "benchmarks.serving_ceiling:app",
        "--port", str(port), "--workers", str(args.workers), "--no-access-log",
        "--log-level", "warning",
    ]  # fmt: skip
    print("starting the constant FastAPI endpoint ...", flush=True)
    with server(cmd, base_env, f"http://127.0.0.1:{port}/v2/health/ready", workdir / "ceiling.log"):
        target = f"http://127.0.0.1:{port}/v1/predict"
        wrk(target, single, "single", args, seconds=2)
        print("  fastapi constant", flush=True)
        results["fastapi constant"] = wrk(target, single, "single", args) | {"rows": 1}

    for r in results.values():
        r["rows_per_s"] = r["requests_per_s"] * r["rows"]

    print("timing the model in-process ...", flush=True)
    local = in_process(uri, one, batch, seconds=min(5.0, args.duration / 2))
    results |= {f"in-process {k}": v for k, v in local["results"].items()}

    ratios = _ratios(results)
    report = {
        "model": f"{MODEL}/{local['version']} from {uri}",
        "connections": args.connections,
        "workers": args.workers,
        "duration_s": args.duration,
        "cpus": os.cpu_count(),
        "results": results,
        "ratios": ratios,
        "out": str(args.out),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    _print(report)
    return 0


def _ratios(r: dict[str, dict[str, Any]]) -> dict[str, float]:
    def rps(name: str) -> float:
        return float(r[name]["requests_per_s"])

    def rows(name: str) -> float:
        return float(r[name]["rows_per_s"])

    return {
        "api cached / api uncached (req/s)": rps("api cached") / rps("api uncached"),
        "api uncached / mlflow models serve (req/s)": rps("api uncached")
        / rps("mlflow models serve"),
        "api cached / mlflow models serve (req/s)": rps("api cached") / rps("mlflow models serve"),
        "api uncached / fastapi constant (req/s)": rps("api uncached") / rps("fastapi constant"),
        "api cached / fastapi constant (req/s)": rps("api cached") / rps("fastapi constant"),
        "api batch uncached / api uncached (rows/s)": rows("api batch uncached")
        / rows("api uncached"),
        "api batch uncached / in-process serving path 1000 rows (rows/s)": rows(
            "api batch uncached"
        )
        / rows("in-process serving path, 1000 rows"),
        "api uncached p50 / in-process model predict 1 row p50": float(r["api uncached"]["p50_ms"])
        / float(r["in-process model predict, 1 row"]["p50_ms"]),
    }


def _print(report: dict[str, Any]) -> None:
    print()
    print(f"model {report['model']}; {report['connections']} connections, "
          f"{report['workers']} workers, {report['duration_s']:g} s per scenario, "
          f"{report['cpus']} CPUs")  # fmt: skip
    header = (
        f"{'scenario':<42}{'req/s':>10}{'rows/s':>12}{'p50 ms':>10}{'p99 ms':>10}"
        f"{'errors':>8}{'cached':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, r in report["results"].items():
        errors = r.get("errors", "")
        cached = r.get("cached_responses", "")
        print(
            f"{name:<42}{r['requests_per_s']:>10.1f}{r['rows_per_s']:>12.0f}"
            f"{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}{errors!s:>8}{cached!s:>8}"
        )
    print()
    for name, value in report["ratios"].items():
        print(f"{name:<70}{value:>8.2f}")
    print(f"\nwritten to {report['out']}")


if __name__ == "__main__":
    sys.exit(main())
