"""Micro-benchmark of access control on the hot path: what authentication adds to a request.

Times, in process, many calls of

* the API-key and JWT checks alone (cached key / cached user, no database),
* the Redis rate-limit check (one round trip),
* the whole dependency chain of a protected route (authenticate -> rate limit -> role),
* and a request through a small FastAPI app (httpx ASGI transport, no network) to a route
  with and without the dependencies: the difference is what authentication costs a request.

Run ``python benchmarks/auth.py`` (Redis at 127.0.0.1:6379 DB 2; ``--redis none`` for the
per-process limiter). Prints p50/p99 in microseconds and writes
``benchmarks/results/auth.json``. Not the serving benchmark: no model, no uvicorn.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.requests import Request

from serving.access.principals import Role
from serving.api.security import (
    PredictPrincipal,
    close_auth,
    install,
    open_auth,
    require_role,
)
from serving.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _request(headers: dict[str, str], app_state: Any) -> Request:
    scope = {
        "app": SimpleNamespace(state=app_state),
        "type": "http",
        "method": "POST",
        "path": "/v1/predict",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "state": {},
        "client": ("127.0.0.1", 50000),
    }
    return Request(scope)


def _summary(samples: list[int]) -> dict[str, float]:
    samples = sorted(samples)
    return {
        "p50_us": samples[len(samples) // 2] / 1000,
        "p99_us": samples[int(len(samples) * 0.99)] / 1000,
        "mean_us": statistics.fmean(samples) / 1000,
    }


async def _time(fn: Callable[[], Awaitable[Any]], calls: int) -> dict[str, float]:
    for _ in range(min(1000, calls)):  # warm-up
        await fn()
    samples = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        await fn()
        samples.append(time.perf_counter_ns() - start)
    return _summary(samples)


async def run(calls: int, redis_url: str | None) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            env="test",
            jwt_secret=secrets.token_urlsafe(48),
            database_url=f"sqlite:///{tmp}/bench.db",
            bcrypt_rounds=4,
            rate_limit="1000000000/minute",
            ratelimit_url=redis_url,
            ratelimit_namespace=f"carprice-bench:{secrets.token_hex(4)}:",
        )
        state = SimpleNamespace()
        access = await open_auth(state, settings)
        try:
            return await _measure(access, settings, calls)
        finally:
            if redis_url:
                import redis

                client = redis.Redis.from_url(redis_url)
                keys = list(client.scan_iter(match=settings.ratelimit_namespace + "*"))
                if keys:
                    client.delete(*keys)
                client.close()
            await close_auth(state)


async def _measure(access: Any, settings: Settings, calls: int) -> dict[str, dict[str, float]]:
    accounts = access.accounts
    await asyncio.to_thread(accounts.create_user, "bench", "bench password", Role.PREDICT)
    key = (await asyncio.to_thread(accounts.create_key, "bench")).key
    token = (await access.login("bench", "bench password")).access_token
    role_check = require_role(Role.PREDICT)
    app_state = SimpleNamespace(access=access)
    auth = access.authenticator
    results: dict[str, dict[str, float]] = {}

    async def chain(api_key: str | None, bearer: str | None) -> None:
        headers = {"X-API-Key": api_key} if api_key else {"Authorization": f"Bearer {bearer}"}
        await role_check(_request(headers, app_state), bearer, api_key)

    principal = await auth.by_api_key(key)
    results["api key check (cached)"] = await _time(lambda: auth.by_api_key(key), calls)
    results["jwt check (cached user)"] = await _time(lambda: auth.by_token(token), calls)
    results["rate limit hit"] = await _time(
        lambda: access.limiter.hit(principal.limit_key, access.request_rate), calls
    )
    results["dependency chain, api key"] = await _time(lambda: chain(key, None), calls)
    results["dependency chain, jwt"] = await _time(lambda: chain(None, token), calls)

    app = FastAPI()
    app.state.access = access
    install(app, settings)

    @app.post("/open")
    async def open_route() -> dict[str, float]:
        return {"price": 1.0}

    @app.post("/protected")
    async def protected(principal: PredictPrincipal) -> dict[str, float]:
        return {"price": 1.0}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        variants = {
            "request, no auth": ("/open", {}),
            "request, api key": ("/protected", {"X-API-Key": key}),
            "request, jwt": ("/protected", {"Authorization": f"Bearer {token}"}),
        }
        # Interleaved, so a noisy neighbour slows every variant alike.
        samples: dict[str, list[int]] = {name: [] for name in variants}
        for i in range(max(1000, calls // 5) + 200):
            for name, (path, headers) in variants.items():
                start = time.perf_counter_ns()
                response = await client.post(path, headers=headers)
                elapsed = time.perf_counter_ns() - start
                assert response.status_code == 200, response.text
                if i >= 200:  # warm-up
                    samples[name].append(elapsed)
        for name, values in samples.items():
            results[name] = _summary(values)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/2", help="'none': in-process")
    args = parser.parse_args()
    redis_url = None if args.redis == "none" else args.redis
    results = asyncio.run(run(args.calls, redis_url))
    limiter = "per-process" if redis_url is None else f"Redis {redis_url}"
    print(f"access control, {args.calls} calls, rate limits: {limiter}")
    print(f"{'path':<30} {'p50 µs':>9} {'p99 µs':>9} {'mean µs':>9}")
    for name, r in results.items():
        print(f"{name:<30} {r['p50_us']:>9.1f} {r['p99_us']:>9.1f} {r['mean_us']:>9.1f}")
    base = results["request, no auth"]["p50_us"]
    for kind in ("api key", "jwt"):
        added = results[f"request, {kind}"]["p50_us"] - base
        print(f"added by auth ({kind}) at p50: {added:.1f} µs")
    out = ROOT / "benchmarks" / "results" / f"auth-{'redis' if redis_url else 'local'}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"calls": args.calls, "limiter": limiter, "results": results}))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
