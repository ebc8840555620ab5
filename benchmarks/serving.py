"""Serving benchmark in the production configuration: this API against ``mlflow models serve``,
the constant FastAPI endpoint and the model's own in-process ``predict``, side by side.

Run ``python -m benchmarks.serving`` (``make bench``). The servers run side by side, 2 uvicorn
workers each, on 127.0.0.1: the API as compose runs it (API-key auth, the cache and the rate
limits in a private ``redis-server`` started for the run, users, keys and the prediction log in
a throw-away PostgreSQL database, multiprocess metrics, access log on), the same API with its
Redis black-holed (a socket that accepts and never answers) and stopped (a closed port),
``mlflow models serve``, and the constant endpoint (``benchmarks/serving_ceiling.py``:
FastAPI + uvicorn with httptools and uvloop, no access log, a plain pydantic model of the 16
fields answering a constant dict). Every scenario runs ``wrk`` with 32 connections for
``--duration`` seconds (after a short warm-up); the sequence (:data:`SCENARIOS`) is repeated
``--rounds`` times, reversed every other round, and the report gives each figure's median
over the rounds and each ratio's median over the rounds' ratios.

* ``api uncached`` / ``api v2 uncached``: ``POST /v1/predict`` / ``/v2/models/car-price/infer``
  (one car as 16 tensors, tritonclient's layout), a stream of distinct cars never repeated;
* ``api cached`` / ``api v2 cached``: one car repeated;
* ``api batch uncached`` / ``api v2 batch uncached``: 1,000 cars per request, a few kilometres
  changed per request so every row misses; ``api batch cached``: the same body repeated;
* ``redis black-holed|stopped uncached|cached``: ``/v1/predict`` on the APIs whose Redis fails;
* ``mlflow models serve``: ``POST /invocations`` with the same car (``dataframe_records``);
* ``fastapi constant`` (the issue's) and ``fastapi Car constant`` (the API's ``Car`` validation);
* ``in-process``: the model's own pipeline ``predict`` on a one-row and a 1,000-row DataFrame,
  and the API's serving path (validated rows -> compiled fast path) on the same.

The model is ``models:/car-price@production`` of ``MLFLOW_TRACKING_URI`` (default: the
project's ``mlruns/mlflow.db``, run ``make train`` first), or with ``--temp-model`` one trained
here with ``params.yaml``'s hyper-parameters into a temporary registry. Prints requests/s,
rows/s, p50/p99, the CPU per request of the server (all its processes), of the Redis and the
PostgreSQL backends it uses, and of ``wrk``: all of them share the cores (a bigger body costs
the client too; every car priced is a Redis write and a logged row). Then the ratios and the
issue's targets (exit status 1 if one is not met), and writes
``benchmarks/results/serving.json`` (medians and every round).

Needs ``wrk`` (Debian: ``apt-get install -y wrk``), ``redis-server`` and PostgreSQL on
127.0.0.1:5432 (``make services``; ``--sqlite`` / ``--cache-url`` / ``--no-redis`` otherwise).
``--only batch,in-process`` runs only the scenarios whose names contain those words (and starts
only the servers they need). Targets 127.0.0.1 only; bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
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

from benchmarks.processes import children_cpu_s, cpu_s, database_backends, server_pids

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "serving.json"
DEFAULT_URI = f"sqlite:///{ROOT / 'mlruns' / 'mlflow.db'}"
MODEL = "car-price"
V2_PATH = f"/v2/models/{MODEL}/infer"

WRK_SCRIPT = r"""
-- args: bodies file, mode (cycle | perturb | single), start offset, threads[, API key]
local threads = {}
local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

-- ``body`` cut once around its kilometre values (/v1 "km_driven":N, /v2 the km_driven tensor's
-- data): the text between them, and the numbers. A perturbed copy is then one table.concat,
-- the kilometres wrapped into the valid range (unbounded, cars became 422s after ~100,000
-- requests). A gsub per request cost wrk ~3 ms a 300 KB batch body, of the CPU the servers
-- share.
local function cut(body)
  local pattern, from, to = '"km_driven":()(%d+)%.?%d*()', 1, #body
  local _, open = string.find(body,
    '"name":"km_driven","shape":%[[%d,]+%],"datatype":"FP64","data":%[')
  if open ~= nil then  -- a /v2 body: the numbers of the km_driven tensor's data
    pattern, from, to = '()(%d+)%.?%d*()', open + 1, string.find(body, ']', open, true)
  end
  local texts, kms, at = {}, {}, 1
  for s, km, e in string.gmatch(body, pattern) do
    if s >= from and s < to then
      texts[#texts + 1] = string.sub(body, at, s - 1)
      kms[#kms + 1] = tonumber(km)
      at = e
    end
  end
  texts[#texts + 1] = string.sub(body, at)
  return texts, kms
end

-- Where a one-car body (/v1 or /v2) has its kilometres' digits: [s, e), or nil (null). Plain
-- finds, a few microseconds: a pattern over the body per request cost wrk 30 us more a /v2
-- car than a /v1 one (and ahead of the run, in init, it would count in the run's requests).
local function km_digits(body)
  local _, last = string.find(body, '"km_driven":', 1, true)
  if last == nil then
    _, last = string.find(body, '"name":"km_driven"', 1, true)
    if last ~= nil then _, last = string.find(body, '"data":[', last, true) end
  end
  if last == nil then return nil end
  local e = string.find(body, "[^%d]", last + 1) or (#body + 1)
  if e == last + 1 then return nil end
  return last + 1, e
end

local function perturbed(texts, kms, delta)
  local out = {}
  for i = 1, #kms do
    out[2 * i - 1] = texts[i]
    out[2 * i] = tostring((kms[i] + delta) % 999000)
  end
  out[2 * #kms + 1] = texts[#texts]
  return table.concat(out)
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
    local i = (k % #bodies) + 1
    local wraps = math.floor(k / #bodies)
    body = bodies[i]
    local s, e = nil, nil
    if wraps > 0 then s, e = km_digits(body) end
    if s ~= nil then  -- past the end: ``wraps`` more kilometres, still a new car
      local km = tostring((tonumber(string.sub(body, s, e - 1)) + wraps) % 999000)
      body = string.sub(body, 1, s - 1) .. km .. string.sub(body, e)
    end
  elseif mode == "perturb" then
    if texts == nil then texts, kms = cut(bodies[1]) end
    body = perturbed(texts, kms, k + 1)  -- every car of request k: k+1 more kilometres
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


def api_key(
    env: dict[str, str], workdir: Path, venv_bin: Path, database_url: str | None = None
) -> str:
    """A user of the predict role in a throw-away user database, and an API key for it.

    Sets the API's database (``database_url``, else SQLite in ``workdir``) and a rate limit
    the benchmark cannot reach in ``env``.
    """
    env["CARPRICE_DATABASE_URL"] = database_url or f"sqlite:///{workdir / 'users.db'}"
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
            times: list[float] = []
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
        "--cache-url",
        default=None,
        help="Redis URL for the API's cache and limits (default: a private redis-server)",
    )
    parser.add_argument(
        "--no-redis", action="store_true", help="in-process cache and per-worker rate limits"
    )
    parser.add_argument(
        "--sqlite",
        action="store_true",
        help="users, keys and prediction log in SQLite (default: a throw-away PostgreSQL DB)",
    )
    parser.add_argument(
        "--only",
        default="",
        metavar="NAMES",
        help="comma-separated parts of scenario names to run, e.g. 'batch,in-process' (default: "
        "all); only the servers they need are started",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.only and not _chosen(args.only):
        known = ", ".join(sc[0] for sc in SCENARIOS)
        parser.error(f"--only {args.only!r} matches no scenario (scenarios: {known})")
    return run_in_workdir(args, "carprice-bench-", _run)


def _chosen(only: str) -> list[Scenario]:
    """The scenarios whose names contain one of ``only``'s comma-separated parts (all if empty)."""
    parts = [p.strip() for p in only.split(",") if p.strip()]
    return [sc for sc in SCENARIOS if not parts or any(p in sc[0] for p in parts)]


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


def v2_body(cars: list[dict[str, Any]]) -> dict[str, Any]:
    """The Open Inference Protocol body of ``cars``, as ``tritonclient`` lays it out: 16 input
    tensors (name, shape, datatype, data; ``BYTES`` and ``FP64``, ``null`` where missing) and
    its ``binary_data_output`` parameter."""
    from serving.inference.features import FEATURES

    return {
        "inputs": [
            {
                "name": f.name,
                "shape": [len(cars)],
                "datatype": "FP64" if f.numeric else "BYTES",
                "data": [
                    None
                    if car[f.name] is None
                    else float(car[f.name])
                    if f.numeric
                    else car[f.name]
                    for car in cars
                ],
            }
            for f in FEATURES
        ],
        "parameters": {"binary_data_output": True},
    }


@contextmanager
def postgres_database() -> Iterator[str]:
    """A throw-away PostgreSQL database on 127.0.0.1:5432 (as compose runs the API: users,
    keys and the prediction log in PostgreSQL); its SQLAlchemy URL."""
    from tests.serving.services import postgres_database as database

    try:
        with database() as url:
            yield url
    except BaseException as exc:
        if type(exc).__name__ == "Skipped":  # pytest's skip: PostgreSQL is not reachable
            raise RuntimeError(f"PostgreSQL is not reachable ({exc}); or pass --sqlite") from None
        raise


@contextmanager
def redis_server(workdir: Path) -> Iterator[tuple[str, int]]:
    """A private ``redis-server`` on a free port (no persistence) for the run; its URL and
    process id."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: apt-get install -y redis-server")
    port = free_port()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
           "no", "--dir", str(workdir), "--logfile", str(workdir / "redis.log")]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start (see {workdir / 'redis.log'})")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


# (name, server, path, bodies file, wrk mode, rows per request, warm-up seconds, with key)
Scenario = tuple[str, str, str, str, str, int, float, bool]
SCENARIOS: list[Scenario] = [
    ("fastapi constant", "ceiling", "/constant", "single", "single", 1, 2, False),
    ("api cached", "api", "/v1/predict", "single", "single", 1, 2, True),
    ("api v2 cached", "api", V2_PATH, "v2 single", "single", 1, 2, True),
    ("redis black-holed cached", "black-holed", "/v1/predict", "single", "single", 1, 2, True),
    ("redis stopped cached", "stopped", "/v1/predict", "single", "single", 1, 2, True),
    ("api uncached", "api", "/v1/predict", "stream", "cycle", 1, 0, True),
    ("api v2 uncached", "api", V2_PATH, "v2 stream", "cycle", 1, 0, True),
    ("redis black-holed uncached", "black-holed", "/v1/predict", "stream", "cycle", 1, 0, True),
    ("redis stopped uncached", "stopped", "/v1/predict", "stream", "cycle", 1, 0, True),
    ("mlflow models serve", "mlflow", "/invocations", "mlflow", "single", 1, 2, False),
    ("api batch uncached", "api", "/v1/predict/batch", "batch", "perturb", 1000, 0, True),
    ("in-process", "", "", "", "", 0, 0, False),
    ("api v2 batch uncached", "api", V2_PATH, "v2 batch", "perturb", 1000, 0, True),
    ("api batch cached", "api", "/v1/predict/batch", "batch", "single", 1000, 2, True),
    ("fastapi Car constant", "ceiling", "/v1/predict", "single", "single", 1, 2, False),
]
"""Measured in this order, reversed every other round (ABBA): the two sides of each ratio are
a few seconds apart. The machine's speed drifted by up to 2x within minutes here: a ratio of
figures taken minutes apart would measure the neighbours."""


def _run(args: argparse.Namespace, workdir: Path) -> int:
    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    if args.temp_model:
        print("training a temporary model (params.yaml, 20,000 rows) ...", flush=True)
        uri = temp_model(workdir)
    print(f"model: {MODEL}@production from {uri}", flush=True)

    pool = cars(60_000, seed=7)
    one = next(c for c in pool if all(v is not None for v in c.values()))
    batch = pool[:1000]
    files = {
        "stream": write_lines(workdir / "stream.jsonl", pool[1000:]),
        "single": write_lines(workdir / "single.jsonl", [one]),
        "batch": write_lines(workdir / "batch.jsonl", [batch]),
        "v2 stream": write_lines(workdir / "v2stream.jsonl", [v2_body([c]) for c in pool[1000:]]),
        "v2 single": write_lines(workdir / "v2single.jsonl", [v2_body([one])]),
        "v2 batch": write_lines(workdir / "v2batch.jsonl", [v2_body(batch)]),
        "mlflow": write_lines(workdir / "mlflow.jsonl", [{"dataframe_records": [one]}]),
    }

    from tests.serving.live import BlackHole, closed_port

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
        # A loaded machine took over 10 s for MLflow's first SQLite read; with the alias
        # polled hourly, a timed-out first load would not be retried within the run.
        "CARPRICE_REGISTRY_TIMEOUT": "120",
    }
    for name in ("CARPRICE_CACHE_URL", "CARPRICE_RATELIMIT_URL"):
        api_env.pop(name, None)
    ports = {name: free_port() for name in ("api", "mlflow", "ceiling", "black-holed", "stopped")}
    local = InProcess(uri, one, batch)
    rounds: list[dict[str, dict[str, Any]]] = []
    with contextlib.ExitStack() as stack:
        database_url = None
        if not args.sqlite:
            database_url = stack.enter_context(postgres_database())
        key = api_key(api_env, workdir, venv_bin, database_url)
        cache_url = args.cache_url
        redis_pids: list[int] = []  # the private Redis's (not one given by --cache-url)
        if cache_url is None and not args.no_redis:
            cache_url, redis_pid = stack.enter_context(redis_server(workdir))
            redis_pids.append(redis_pid)
        hole = BlackHole()
        stack.callback(hole.close)
        outages = {
            "black-holed": f"redis://127.0.0.1:{hole.port}/0",
            "stopped": f"redis://127.0.0.1:{closed_port()}/0",
        }
        chosen = _chosen(args.only)
        needed = {sc[1] for sc in chosen}
        servers = [("api", cache_url)] + ([] if cache_url is None else list(outages.items()))
        servers = [(name, url) for name, url in servers if name in needed]
        for name, url in servers:
            env = api_env | ({"CARPRICE_CACHE_URL": url} if url else {})
            print(f"starting the API ({name}, cache {url or 'in-process'}) ...", flush=True)
            cmd = [str(venv_bin / "carprice"), "serve", "--port", str(ports[name]),
                   "--workers", str(args.workers)]  # fmt: skip
            ready = f"http://127.0.0.1:{ports[name]}/v2/health/ready"
            stack.enter_context(server(cmd, env, ready, workdir / f"{name}.log"))
        if "mlflow" in needed:
            print("starting mlflow models serve ...", flush=True)
            cmd = [str(venv_bin / "mlflow"), "models", "serve", "-m",
                   f"models:/{MODEL}@production", "--env-manager", "local", "-h", "127.0.0.1",
                   "-p", str(ports["mlflow"]), "-w", str(args.workers)]  # fmt: skip
            health = f"http://127.0.0.1:{ports['mlflow']}/health"
            stack.enter_context(server(cmd, base_env, health, workdir / "mlflow.log"))
        if "ceiling" in needed:
            print("starting the constant FastAPI endpoint ...", flush=True)
            cmd = [sys.executable, "-m", "uvicorn", "benchmarks.serving_ceiling:app",
                   "--port", str(ports["ceiling"]), "--workers", str(args.workers),
                   "--http", "httptools", "--loop", "uvloop", "--no-access-log",
                   "--log-level", "warning"]  # fmt: skip
            ready = f"http://127.0.0.1:{ports['ceiling']}/v2/health/ready"
            stack.enter_context(server(cmd, base_env, ready, workdir / "ceiling.log"))
        served = {name for name, _ in servers} | ({"mlflow", "ceiling"} & needed)
        scenarios = [sc for sc in chosen if sc[1] in served or sc[1] == ""]
        # Each API worker loads its model in the background: warm until both answer. The
        # warm-up's cars are in that server's cache: the measured streams start past them.
        pids = {where: server_pids(ports[where]) for where in served}
        # Beside the API's own CPU, what it costs the Redis and PostgreSQL it uses, which share
        # these cores: the private Redis, and the backends of the API's database (users, keys
        # and the prediction log), looked up before each measurement.
        database = database_url.rsplit("/", 1)[1] if database_url else None
        offset = 0
        for name, _ in servers:
            url = f"http://127.0.0.1:{ports[name]}/v1/predict"
            warmed = wrk(url, files["stream"], "cycle", args, offset=0, seconds=3, api_key=key)
            offset = max(offset, warmed["requests"] + 1000)
        for r in range(args.rounds):
            print(f"round {r + 1} of {args.rounds}", flush=True)
            results: dict[str, dict[str, Any]] = {}
            for name, where, path, bodies, mode, rows, warm, keyed in (
                scenarios if r % 2 == 0 else scenarios[::-1]
            ):
                print(f"  {name}", flush=True)
                if name == "in-process":
                    results |= local.measure(args.duration)
                    continue
                url = f"http://127.0.0.1:{ports[where]}{path}"
                credential = key if keyed else ""
                if warm:
                    wrk(url, files[bodies], mode, args, seconds=warm, api_key=credential)
                # Uncached streams go on where the last one stopped: every car is new.
                uses = {"redis": redis_pids if where == "api" else [], "database": []}
                if database and where not in ("mlflow", "ceiling"):
                    uses["database"] = database_backends(database)
                server_cpu, client_cpu = cpu_s(pids[where]), children_cpu_s()
                used_cpu = {name: cpu_s(used) for name, used in uses.items()}
                result = wrk(url, files[bodies], mode, args, offset=offset, api_key=credential)
                per_request = 1e6 / max(1, result["requests"])
                result |= {
                    "server_cpu_us": (cpu_s(pids[where]) - server_cpu) * per_request,
                    "client_cpu_us": (children_cpu_s() - client_cpu) * per_request,
                    **{
                        f"{name}_cpu_us": (cpu_s(uses[name]) - before) * per_request
                        for name, before in used_cpu.items()
                    },
                }
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
        "cache": "in-process" if cache_url is None else "Redis (cache and rate limits)",
        "database": "SQLite" if database_url is None else "PostgreSQL",
        "connections": args.connections,
        "workers": args.workers,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
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
        return float(r[name]["requests_per_s"]) if name in r else math.nan

    def rows(name: str) -> float:
        return float(r[name]["rows_per_s"]) if name in r else math.nan

    dataframe = "in-process model predict, 1000 rows"
    return {
        "api uncached / fastapi constant (req/s)": rps("api uncached") / rps("fastapi constant"),
        "api uncached / mlflow models serve (req/s)": rps("api uncached")
        / rps("mlflow models serve"),
        "api cached / fastapi constant (req/s)": rps("api cached") / rps("fastapi constant"),
        "api cached / api uncached (req/s)": rps("api cached") / rps("api uncached"),
        "api v2 uncached / api uncached (req/s)": rps("api v2 uncached") / rps("api uncached"),
        "api v2 cached / api cached (req/s)": rps("api v2 cached") / rps("api cached"),
        "api batch uncached / in-process model predict 1000 rows (rows/s)": rows(
            "api batch uncached"
        )
        / rows(dataframe),
        "api v2 batch uncached / in-process model predict 1000 rows (rows/s)": rows(
            "api v2 batch uncached"
        )
        / rows(dataframe),
        "api batch uncached / in-process serving path 1000 rows (rows/s)": rows(
            "api batch uncached"
        )
        / rows("in-process serving path, 1000 rows"),
        "api batch cached / in-process model predict 1000 rows (rows/s)": rows("api batch cached")
        / rows(dataframe),
        "redis black-holed uncached / api uncached (req/s)": rps("redis black-holed uncached")
        / rps("api uncached"),
        "redis black-holed cached / api cached (req/s)": rps("redis black-holed cached")
        / rps("api cached"),
        "redis stopped uncached / api uncached (req/s)": rps("redis stopped uncached")
        / rps("api uncached"),
        "redis stopped cached / api cached (req/s)": rps("redis stopped cached")
        / rps("api cached"),
        "fastapi Car constant / fastapi constant (req/s)": rps("fastapi Car constant")
        / rps("fastapi constant"),
    }


def _targets(r: dict[str, dict[str, Any]], ratios: dict[str, float]) -> list[dict[str, Any]]:
    """The targets of the performance issue, each with the measured value (ratios: the median
    of the per-round ratios; p99: the median of the rounds' p99)."""

    def p99(name: str) -> float:
        return -float(r[name]["p99_ms"]) if name in r else math.nan

    # (target, value, bound): met when value >= bound ("less than" targets are negated).
    checks = [
        ("uncached >= 35% of the constant endpoint",
         ratios["api uncached / fastapi constant (req/s)"], 0.35),
        ("uncached >= 20x mlflow models serve",
         ratios["api uncached / mlflow models serve (req/s)"], 20),
        ("uncached p99 < 25 ms", p99("api uncached"), -25),
        ("cached >= 60% of the constant endpoint",
         ratios["api cached / fastapi constant (req/s)"], 0.60),
        ("cached p99 < 25 ms", p99("api cached"), -25),
        ("v2 uncached >= 80% of v1 uncached", ratios["api v2 uncached / api uncached (req/s)"],
         0.80),
        ("v2 cached >= 80% of v1 cached", ratios["api v2 cached / api cached (req/s)"], 0.80),
        ("batch of 1000 >= 1.0x in-process DataFrame predict rows/s",
         ratios["api batch uncached / in-process model predict 1000 rows (rows/s)"], 1.0),
        ("v2 batch of 1000 >= 0.9x in-process DataFrame predict rows/s",
         ratios["api v2 batch uncached / in-process model predict 1000 rows (rows/s)"], 0.9),
    ]  # fmt: skip
    for outage in ("black-holed", "stopped"):
        for kind in ("uncached", "cached"):
            name = f"redis {outage} {kind}"
            checks += [
                (f"{name} >= 50% of normal", ratios[f"{name} / api {kind} (req/s)"], 0.5),
                (f"{name} p99 < 100 ms", p99(name), -100),
            ]
    checks.append(("no failed request", -float(sum(x.get("errors", 0) for x in r.values())), 0))
    return [
        {"target": name, "value": abs(value), "met": value >= bound}
        for name, value, bound in checks
        if not math.isnan(value)
    ]


def _print(report: dict[str, Any]) -> None:
    print()
    print(f"model {report['model']}, cache {report['cache']}; {report['connections']} connections, "
          f"{report['workers']} workers, {report['duration_s']:g} s per scenario, "
          f"{report['cpus']} CPUs, load average at the end "
          f"{', '.join(f'{x:.1f}' for x in report['load_average'])}")  # fmt: skip
    header = (
        f"{'scenario':<42}{'req/s':>10}{'rows/s':>12}{'p50 ms':>10}{'p99 ms':>10}"
        f"{'errors':>8}{'cached':>8}{'server us':>11}{'redis us':>10}{'db us':>8}{'wrk us':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, r in report["results"].items():
        errors = r.get("errors", "")
        cached = r.get("cached_responses", "")
        cpu = ""
        if "server_cpu_us" in r:
            cpu = (
                f"{r['server_cpu_us']:>11.0f}{r['redis_cpu_us']:>10.0f}"
                f"{r['database_cpu_us']:>8.0f}{r['client_cpu_us']:>8.0f}"
            )
        print(
            f"{name:<42}{r['requests_per_s']:>10.1f}{r['rows_per_s']:>12.0f}"
            f"{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}{errors!s:>8}{cached!s:>8}{cpu}"
        )
    print()
    for name, value in report["ratios"].items():
        if not math.isnan(value):  # a side not run (--only)
            print(f"{name:<70}{value:>8.2f}")
    print()
    for t in report["targets"]:
        print(f"{'met    ' if t['met'] else 'NOT MET'} {t['target']:<56}{t['value']:>10.2f}")
    print(f"\nwritten to {report['out']}")


if __name__ == "__main__":
    sys.exit(main())
