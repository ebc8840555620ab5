"""Serving benchmark: this API against ``mlflow models serve``, a constant FastAPI endpoint and
the model's own in-process ``predict``, side by side on the same model and the same car.

Run ``python benchmarks/serving.py`` (``make bench``). The three servers (the API,
``mlflow models serve``, the constant endpoint) run side by side, 2 uvicorn workers each, on
127.0.0.1; every scenario runs ``wrk`` with 32 connections for ``--duration`` seconds (after a
short warm-up), and the whole set is repeated ``--rounds`` times (default 5): the report gives
each figure's median over the rounds, and each ratio's median over the rounds' ratios (the
two sides of a ratio are measured back to back, in alternating order).

* ``api uncached``: ``POST /v1/predict``, a stream of distinct cars drawn like the training
  data, never repeated across rounds (the cache is on, every request misses);
* ``api cached``: ``POST /v1/predict``, one car repeated (every request after the first hits);
* ``api batch uncached``: ``POST /v1/predict/batch`` with 1,000 cars, a few kilometres
  changed per request so every row misses; ``api batch cached``: the same body repeated;
* ``mlflow models serve``: ``POST /invocations`` with the same car (``dataframe_records``);
* ``fastapi constant``: the same ``Car`` validation returning a constant (the ceiling);
* ``in-process``: the model's own pipeline ``predict`` on a one-row and a 1,000-row
  DataFrame, and the API's serving path (validated rows -> compiled fast path) on the same.

The model is ``models:/car-price@production`` of ``MLFLOW_TRACKING_URI`` (default: the
project's ``mlruns/mlflow.db``, run ``make train`` first), or with ``--temp-model`` one trained
here with ``params.yaml``'s hyper-parameters into a temporary registry. Prints requests/s,
rows/s, p50/p99, the ratios and the issue's targets (exit status 1 if one is not met), and
writes ``benchmarks/results/serving.json`` (medians and every round).

Needs ``wrk`` (Debian: ``apt-get install -y wrk``). Targets 127.0.0.1 only; bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
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
    local wraps = math.floor(k / #bodies)
    if wraps > 0 then  -- past the end of the stream: shift the kilometres, still a new car
      body = string.gsub(body, '"km_driven":(%d+)', function(km)
        return '"km_driven":' .. (tonumber(km) + wraps)
      end)
    end
  elseif mode == "perturb" then
    -- Every car of request k gets k+1 more kilometres, wrapped into the valid range (an
    -- unbounded shift made cars invalid after ~100,000 requests: 422s, not prices).
    body = string.gsub(bodies[1], '"km_driven":(%d+)%.?%d*', function(km)
      return '"km_driven":' .. ((tonumber(km) + k + 1) % 999000)
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


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes], in_a_row: int = 30) -> None:
    """Wait until ``url`` answers 200 ``in_a_row`` times on new connections: with several
    workers each connection lands on any of them, so one answer says little (a worker still
    loading its model answers 503)."""
    deadline = time.monotonic() + timeout
    good = 0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - 127.0.0.1 only
                good = good + 1 if r.status == 200 else 0
        except OSError:
            good = 0
        if good >= in_a_row:
            return
        time.sleep(0.05 if good else 0.2)
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
    from serving.inference.features import BY_NAME

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


class InProcess:
    """The model's own predict and the API's serving path, timed in this process, one thread."""

    def __init__(self, uri: str, one: dict[str, Any], thousand: list[dict[str, Any]]) -> None:
        from serving.inference.features import make_row
        from serving.inference.model import load_version, to_frame
        from serving.inference.registry import Registry

        registry = Registry(uri, MODEL, 30)
        info = registry.version_for_alias("production")
        assert info is not None, f"no {MODEL}@production in {uri}"
        self.version = info.version
        self.model = load_version(registry, info, threads=1)
        self.one_rows = [make_row(one)]
        self.many_rows = [make_row(c) for c in thousand]
        self.one_frame, self.many_frame = to_frame(self.one_rows), to_frame(self.many_rows)

    def _pipeline_predict(self, frame: Any) -> Callable[[], Any]:
        from serving.inference.model import _openmp

        def call() -> Any:
            with _openmp().limit(limits=1, user_api="openmp"):
                return self.model.estimator.predict(frame)

        return call

    def measure(self, seconds: float) -> dict[str, dict[str, Any]]:
        cases: list[tuple[str, Callable[[], Any], int]] = [
            ("model predict, 1 row", self._pipeline_predict(self.one_frame), 1),
            ("model predict, 1000 rows", self._pipeline_predict(self.many_frame), 1000),
            ("serving path, 1 row", lambda: self.model.predict(self.one_rows), 1),
            ("serving path, 1000 rows", lambda: self.model.predict(self.many_rows), 1000),
        ]
        out = {}
        for name, call, rows in cases:
            for _ in range(3):
                call()
            times = []
            deadline = time.perf_counter() + seconds / len(cases)
            while time.perf_counter() < deadline or len(times) < 20:
                started = time.perf_counter()
                call()
                times.append(time.perf_counter() - started)
            times.sort()
            out[f"in-process {name}"] = {
                "requests_per_s": len(times) / sum(times),
                "rows_per_s": rows * len(times) / sum(times),
                "p50_ms": statistics.median(times) * 1000,
                "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))] * 1000,
                "calls": len(times),
            }
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=6, help="seconds per scenario")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers per server")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="median of this many rounds")
    parser.add_argument("--temp-model", action="store_true", help="train a model here")
    parser.add_argument(
        "--cache-url", default=None, help="Redis URL for the API (default: in-process)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    return run_in_workdir(args, "carprice-bench-", _run)


def run_in_workdir(
    args: argparse.Namespace, prefix: str, run: Callable[[argparse.Namespace, Path], int]
) -> int:
    """``run(args, workdir)`` in a new temporary folder (also ``args.workdir``), removed
    afterwards; exit status 2 without running if ``wrk`` is not installed."""
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk (Debian/Ubuntu)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    args.workdir = str(workdir)
    try:
        return run(args, workdir)
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

    venv_bin = Path(sys.executable).parent
    base_env = os.environ | {
        "MLFLOW_TRACKING_URI": uri,
        "PYTHONUNBUFFERED": "1",
        # mlflow models serve runs a bare ``uvicorn``: it must find the venv's.
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    api_env = base_env | {
        "CARPRICE_ENV": "test",
        "CARPRICE_JWT_SECRET": secrets.token_hex(32),
        "CARPRICE_RELOAD_INTERVAL": "3600",
    }
    api_env.pop("CARPRICE_CACHE_URL", None)
    if args.cache_url:
        api_env["CARPRICE_CACHE_URL"] = args.cache_url
    key = api_key(api_env, workdir, venv_bin)
    api, mlflow_url, ceiling = free_port(), free_port(), free_port()
    servers = [
        (
            "the API",
            [str(venv_bin / "carprice"), "serve", "--port", str(api),
             "--workers", str(args.workers)],
            api_env,
            f"http://127.0.0.1:{api}/v2/health/ready",
        ),
        (
            "mlflow models serve",
            [str(venv_bin / "mlflow"), "models", "serve", "-m", f"models:/{MODEL}@production",
             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(mlflow_url),
             "-w", str(args.workers)],
            base_env,
            f"http://127.0.0.1:{mlflow_url}/health",
        ),
        (
            "the constant FastAPI endpoint",
            [sys.executable, "-m", "uvicorn", "benchmarks.serving_ceiling:app",
             "--port", str(ceiling), "--workers", str(args.workers), "--no-access-log",
             "--log-level", "warning"],
            base_env,
            f"http://127.0.0.1:{ceiling}/v2/health/ready",
        ),
    ]  # fmt: skip
    predict = f"http://127.0.0.1:{api}/v1/predict"
    # (name, url, bodies, wrk mode, rows per request, warm-up seconds, API key)
    scenarios: list[tuple[str, str, Path, str, int, float, str]] = [
        ("api uncached", predict, stream, "cycle", 1, 0, key),
        ("api cached", predict, single, "single", 1, 2, key),
        ("api batch uncached", f"{predict}/batch", batch_file, "perturb", 1000, 0, key),
        ("api batch cached", f"{predict}/batch", batch_file, "single", 1000, 2, key),
        ("mlflow models serve", f"http://127.0.0.1:{mlflow_url}/invocations", mlflow_single,
         "single", 1, 2, ""),
        ("fastapi constant", f"http://127.0.0.1:{ceiling}/v1/predict", single, "single", 1, 2, ""),
    ]  # fmt: skip
    by_name = {sc[0]: sc for sc in scenarios}
    # Pairs measured back to back, the order swapped every round (ABBA): on a shared machine
    # the load of the neighbours drifts within minutes, and a ratio of two figures taken
    # seconds apart is steadier than a ratio of medians.
    pairs = [
        ("api uncached", "mlflow models serve"),
        ("api cached", "fastapi constant"),
        ("api batch uncached", "in-process"),
        ("api batch cached",),
    ]
    local = InProcess(uri, one, batch)
    rounds: list[dict[str, dict[str, Any]]] = []
    with contextlib.ExitStack() as stack:
        for name, cmd, env, ready in servers:
            print(f"starting {name} ({args.workers} workers) ...", flush=True)
            stack.enter_context(server(cmd, env, ready, workdir / f"{name.split()[1]}.log"))
        # Each API worker loads its model in the background: warm until both answer.
        wrk(predict, stream, "cycle", args, offset=0, seconds=3, api_key=key)
        offset = 5_000
        for r in range(args.rounds):
            print(f"round {r + 1} of {args.rounds}", flush=True)
            results: dict[str, dict[str, Any]] = {}
            for pair in pairs:
                for name in pair if r % 2 == 0 else reversed(pair):
                    print(f"  {name}", flush=True)
                    if name == "in-process":
                        results |= local.measure(args.duration)
                        continue
                    _, url, bodies, mode, rows, warm, credential = by_name[name]
                    if warm:
                        wrk(url, bodies, mode, args, seconds=warm, api_key=credential)
                    # Uncached streams go on where the last one stopped: every car is new.
                    result = wrk(url, bodies, mode, args, offset=offset, api_key=credential)
                    if mode != "single":
                        offset += result["requests"] + 1000
                    results[name] = result | {
                        "rows": rows,
                        "rows_per_s": result["requests_per_s"] * rows,
                    }
            rounds.append(results)

    merged = _medians(rounds)
    ratios = {k: statistics.median(_ratios(r)[k] for r in rounds) for k in _ratios(rounds[0])}
    report = {
        "model": f"{MODEL}/{local.version} from {uri}",
        "connections": args.connections,
        "workers": args.workers,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "results": merged,
        "ratios": ratios,
        "ratios_per_round": [_ratios(r) for r in rounds],
        "targets": _targets(merged, ratios),
        "per_round": rounds,
        "out": str(args.out),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    _print(report)
    return 0 if all(t["met"] for t in report["targets"]) else 1


def _medians(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per scenario and figure, the median over the rounds (servers share the machine, and
    a neighbour's burst lands on one round, not on the median)."""
    out: dict[str, dict[str, Any]] = {}
    for name in rounds[0]:
        out[name] = {}
        for field, first in rounds[0][name].items():
            values = [r[name][field] for r in rounds]
            out[name][field] = (
                statistics.median(values) if isinstance(first, int | float) else first
            )
        out[name]["errors"] = sum(r[name].get("errors", 0) for r in rounds)
    return out


def _ratios(r: dict[str, dict[str, Any]]) -> dict[str, float]:
    def rps(name: str) -> float:
        return float(r[name]["requests_per_s"])

    def rows(name: str) -> float:
        return float(r[name]["rows_per_s"])

    return {
        "api cached / api uncached (req/s)": rps("api cached") / rps("api uncached"),
        "api uncached / mlflow models serve (req/s)": rps("api uncached")
        / rps("mlflow models serve"),
        "api uncached / fastapi constant (req/s)": rps("api uncached") / rps("fastapi constant"),
        "api cached / fastapi constant (req/s)": rps("api cached") / rps("fastapi constant"),
        "api batch uncached / in-process model predict 1000 rows (rows/s)": rows(
            "api batch uncached"
        )
        / rows("in-process model predict, 1000 rows"),
        "api batch uncached / in-process serving path 1000 rows (rows/s)": rows(
            "api batch uncached"
        )
        / rows("in-process serving path, 1000 rows"),
        "api batch cached / in-process model predict 1000 rows (rows/s)": rows("api batch cached")
        / rows("in-process model predict, 1000 rows"),
    }


def _targets(r: dict[str, dict[str, Any]], ratios: dict[str, float]) -> list[dict[str, Any]]:
    """The targets of the performance issue, each with the measured value (ratios: the median
    of the per-round ratios; p99: the median of the rounds' p99)."""
    # (target, value, bound): met when value >= bound ("less than" targets are negated).
    checks = [
        ("uncached >= 10x mlflow models serve",
         ratios["api uncached / mlflow models serve (req/s)"], 10),
        ("uncached >= 20% of the constant endpoint",
         ratios["api uncached / fastapi constant (req/s)"], 0.20),
        ("uncached p99 < 50 ms", -float(r["api uncached"]["p99_ms"]), -50),
        ("cached >= 70% of the constant endpoint",
         ratios["api cached / fastapi constant (req/s)"], 0.70),
        ("batch of 1000 >= 90% of in-process predict rows/s",
         ratios["api batch uncached / in-process model predict 1000 rows (rows/s)"], 0.90),
        ("no failed request", -float(sum(x.get("errors", 0) for x in r.values())), 0),
    ]  # fmt: skip
    return [
        {"target": name, "value": abs(value), "met": value >= bound}
        for name, value, bound in checks
    ]


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
    print()
    for t in report["targets"]:
        print(f"{'met    ' if t['met'] else 'NOT MET'} {t['target']:<56}{t['value']:>10.2f}")
    print(f"\nwritten to {report['out']}")


if __name__ == "__main__":
    sys.exit(main())
