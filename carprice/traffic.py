"""``carprice traffic``: realistic requests from the project's generator to a running API.

Cars are drawn by :func:`pipelines.synthetic.generate` (cleaned as the pipeline cleans them, so
each is valid input), optionally shifted by a drift spec, and sent as ``POST /v1/predict``
(``--batch 1``) or ``/v1/predict/batch`` at a steady rate. With ``--feedback P`` a share ``P``
of the priced cars gets its generator price reported back through ``POST /v1/feedback``, as
an application reporting the real sale price would: after the traffic (a sale comes later than
its price), each report tried again for up to 10 s while the API has not logged its
prediction yet (404).

A drift spec is a comma-separated list of shifts, each optionally applied to a share of the
cars only (``:share``)::

    year+5            add (numbers; ``-`` subtracts)
    km_driven*2       multiply (numbers)
    fuel_type=Electric:0.3   set, on 30 % of the cars (categories or numbers)

Shifted numbers are rounded for integer features and clipped to the data contract's range,
so the API accepts every car (``year+5`` piles the newest cars up at the last model year):
drift, not invalid input, is what a spec makes.

This talks HTTP only: the API may run anywhere. It lives beside the CLI because it imports the
generator (``pipelines``), which the serving half never does.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from pipelines.contract import CATEGORICAL, FEATURES, NUMERICAL, TARGET, build_contract
from pipelines.preprocess import clean
from pipelines.synthetic import generate

_SHIFT = re.compile(
    r"^\s*(?P<column>[a-z_]+)\s*(?P<op>[-+*=])\s*(?P<value>[^:]+?)\s*(?::\s*(?P<share>[^:]+))?\s*$"
)


class SpecError(ValueError):
    """A drift spec that cannot be parsed (the message says which part and why)."""


@dataclass(frozen=True)
class Shift:
    """One change to one feature, on a share of the cars."""

    column: str
    op: Literal["+", "-", "*", "="]
    value: str | float
    share: float = 1.0


def parse_spec(spec: str) -> list[Shift]:
    """Parse ``year+5,km_driven*2,fuel_type=Electric:0.3`` into shifts.

    Raises:
        SpecError: an unknown feature, an operator that does not fit its kind, a value that is
            not a number where one is needed, or a share outside (0, 1].
    """
    shifts: list[Shift] = []
    for part in (p for p in spec.split(",") if p.strip()):
        match = _SHIFT.match(part)
        if match is None:
            raise SpecError(
                f"cannot read {part.strip()!r}: write feature+N, feature-N, feature*N or "
                "feature=VALUE, optionally :SHARE (e.g. year+5,fuel_type=Electric:0.3)"
            )
        column, op, raw = match["column"], match["op"], match["value"]
        if column not in FEATURES:
            raise SpecError(f"{column!r} is not a feature (features: {', '.join(FEATURES)})")
        share = 1.0
        if match["share"] is not None:
            try:
                share = float(match["share"])
            except ValueError:
                raise SpecError(
                    f"{part.strip()!r}: share {match['share']!r} is not a number"
                ) from None
            if not 0 < share <= 1:
                raise SpecError(f"{part.strip()!r}: the share must be in (0, 1], got {share}")
        value: str | float = raw
        if column in NUMERICAL:
            try:
                value = float(raw)
            except ValueError:
                raise SpecError(f"{part.strip()!r}: {column} is a number, {raw!r} is not") from None
            if not math.isfinite(value):
                raise SpecError(f"{part.strip()!r}: {raw!r} is not a finite number")
        elif op != "=":
            raise SpecError(f"{part.strip()!r}: {column} is a category, only = applies")
        shifts.append(Shift(column, op, value, share))  # type: ignore[arg-type]
    return shifts


def apply_shifts(cars: pd.DataFrame, shifts: list[Shift], rng: np.random.Generator) -> pd.DataFrame:
    """``cars`` with each shift applied to its share of the rows (a new frame)."""
    out = cars.copy()
    contract = build_contract()
    for shift in shifts:
        chosen = rng.random(len(out)) < shift.share
        if shift.column in CATEGORICAL:
            out[shift.column] = out[shift.column].astype(object)
            out.loc[chosen, shift.column] = shift.value
            continue
        spec = contract.column(shift.column)
        column = out[shift.column].astype("float64")
        value = float(shift.value)
        changed = {
            "+": column + value,
            "-": column - value,
            "*": column * value,
            "=": pd.Series(value, index=column.index),
        }[shift.op]
        changed = changed.clip(spec.min, spec.max)
        if spec.kind == "integer":
            changed = changed.round()
        column = column.where(~chosen | column.isna(), changed)
        out[shift.column] = column
    return out


def cars_frame(rows: int, seed: int, shifts: list[Shift]) -> pd.DataFrame:
    """``rows`` valid cars drawn like the training data (features + the generator's price)."""
    listings, _ = clean(generate(rows, seed).listings, build_contract(min_rows=1))
    features = listings[[*FEATURES, TARGET]].astype({c: "float64" for c in NUMERICAL})
    return apply_shifts(features, shifts, np.random.default_rng(seed + 1)).reset_index(drop=True)


def to_json_cars(cars: pd.DataFrame) -> list[dict[str, Any]]:
    """Cars as a JSON client sends them: ``null`` for missing, integers as integers."""
    integer = {c.name for c in build_contract().columns if c.kind == "integer"}
    out: list[dict[str, Any]] = []
    for record in cars[list(FEATURES)].to_dict(orient="records"):
        car: dict[str, Any] = {}
        for key, value in record.items():
            name = str(key)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                car[name] = None
            elif name in NUMERICAL:
                car[name] = int(value) if name in integer else float(value)
            else:
                car[name] = str(value)
        out.append(car)
    return out


@dataclass
class Summary:
    """What a traffic run did."""

    requests: int = 0
    cars: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    feedback_sent: int = 0
    feedback_ok: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> int:
        return self.statuses.get("200", 0)

    def lines(self) -> list[str]:
        lat = np.asarray(self.latencies) * 1000 if self.latencies else np.zeros(1)
        rate = self.requests / self.seconds if self.seconds else 0.0
        errors = {k: v for k, v in sorted(self.statuses.items()) if k != "200"}
        return [
            f"requests: {self.requests} in {self.seconds:.1f} s ({rate:.1f}/s), "
            f"cars priced: {self.cars}",
            f"answers: 200 x {self.ok}" + "".join(f", {k} x {v}" for k, v in errors.items()),
            f"latency ms: p50 {np.percentile(lat, 50):.1f}, p95 {np.percentile(lat, 95):.1f}, "
            f"p99 {np.percentile(lat, 99):.1f}",
            f"feedback: {self.feedback_ok} of {self.feedback_sent} reports accepted",
        ]


def _batches(cars: list[dict[str, Any]], prices: list[float], size: int) -> Iterator[Any]:
    # Cycle through the drawn cars for as long as the run lasts.
    index = 0
    while True:
        chunk = [
            (cars[(index + i) % len(cars)], prices[(index + i) % len(cars)]) for i in range(size)
        ]
        index = (index + size) % len(cars)
        yield chunk


FEEDBACK_TRIES = 20
FEEDBACK_RETRY_SECONDS = 0.5


async def _run(
    url: str,
    api_key: str,
    rate: float,
    duration: float,
    cars: pd.DataFrame,
    batch: int,
    feedback: float,
    concurrency: int,
    progress: bool,
    seed: int,
) -> Summary:
    import httpx
    from tqdm import tqdm

    summary = Summary()
    rng = np.random.default_rng(seed + 2)
    json_cars = to_json_cars(cars)
    prices = [float(p) for p in cars[TARGET]]
    total = max(1, int(rate * duration))
    bar = tqdm(total=total, unit="req", disable=not progress, desc="traffic")
    limit = asyncio.Semaphore(concurrency)
    headers = {"X-API-Key": api_key}
    path = "/v1/predict" if batch == 1 else "/v1/predict/batch"
    pending: list[Any] = []  # feedback bodies, reported once the traffic is sent

    async def one(client: httpx.AsyncClient, chunk: list[tuple[dict[str, Any], float]]) -> None:
        body: Any = chunk[0][0] if batch == 1 else [car for car, _ in chunk]
        started = time.perf_counter()
        try:
            response = await client.post(path, json=body)
            status = str(response.status_code)
        except httpx.HTTPError as exc:
            status = type(exc).__name__
            response = None
        summary.latencies.append(time.perf_counter() - started)
        summary.requests += 1
        summary.statuses[status] += 1
        bar.update(1)
        if response is None or response.status_code != 200:
            return
        summary.cars += len(chunk)
        request_id = response.json()["request_id"]
        reports = [
            {"request_id": request_id, "row": row, "actual_price": price}
            for row, (_, price) in enumerate(chunk)
            if feedback > 0 and rng.random() < feedback
        ]
        if reports:
            pending.append(reports if batch > 1 else reports[0])
            summary.feedback_sent += len(reports)

    async def report(client: httpx.AsyncClient, body: Any) -> None:
        # A sale price comes after the prediction; the API knows a prediction once its log
        # writer has stored it (a fraction of a second), so a 404 is tried again for a while.
        for _ in range(FEEDBACK_TRIES):
            try:
                answer = await client.post("/v1/feedback", json=body)
            except httpx.HTTPError:
                return
            if answer.status_code != 404:
                if answer.status_code == 200:
                    summary.feedback_ok += len(body) if isinstance(body, list) else 1
                return
            await asyncio.sleep(FEEDBACK_RETRY_SECONDS)

    async def guarded(client: httpx.AsyncClient, chunk: Any) -> None:
        async with limit:
            await one(client, chunk)

    started = time.monotonic()
    tasks: set[asyncio.Task[None]] = set()
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        for sent, chunk in enumerate(_batches(json_cars, prices, batch)):
            due = started + sent / rate
            if due - started >= duration or sent >= total:
                break
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            while len(tasks) >= concurrency * 4:  # a slow API must not pile up tasks
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            task = asyncio.create_task(guarded(client, chunk))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks)
        for start in range(0, len(pending), concurrency):
            await asyncio.gather(*(report(client, b) for b in pending[start : start + concurrency]))
    bar.close()
    summary.seconds = time.monotonic() - started
    return summary


def run(
    url: str,
    api_key: str,
    *,
    rate: float,
    duration: float,
    drift: str = "",
    feedback: float = 0.0,
    batch: int = 1,
    seed: int = 7,
    concurrency: int = 16,
    progress: bool = True,
) -> Summary:
    """Send ``rate`` requests a second for ``duration`` seconds; return what happened.

    Raises:
        SpecError: ``drift`` cannot be parsed.
    """
    shifts = parse_spec(drift)
    pool = min(max(int(rate * duration) * batch, 1), 20_000)
    cars = cars_frame(max(pool, 50), seed, shifts)
    return asyncio.run(
        _run(url.rstrip("/"), api_key, rate, duration, cars, batch, feedback, concurrency,
             progress, seed)
    )  # fmt: skip
