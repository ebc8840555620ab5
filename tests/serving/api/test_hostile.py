"""Hostile input costs nothing: each finding of the fuzzing (issue 14) against a real server.

``carprice serve`` runs in its own process (one worker), so what is measured is the server's
own time: its CPU (from ``/proc``), its memory, and how long a concurrent ``GET
/v2/health/live`` waits. Before the fix an 800 KB array took 5-12 s and stalled the probe for
5.8 s; the bounds here are generous (a loaded 2-core machine meets them) and still far from that.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import multiprocessing
import socket
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.serving.live import ServerProcess, cpu_seconds, rss_bytes, server_process
from tests.serving.probe import poll
from tests.serving.support import CAR, ServingRegistry

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]  # setup: a model load

ARRAY = b"[" + b",".join([b"0"] * 400_000) + b"]"  # 800 KB
KEYS = json.dumps({str(i): 0 for i in range(100_000)}, separators=(",", ":")).encode()  # 889 KB
DEEP = b"[" * 100_000 + b"]" * 100_000
BOGUS = {"X-API-Key": "cpk_0123456789_" + "x" * 43}
JSON = {"Content-Type": "application/json"}
INFER = "/v2/models/car-price/infer"
CPU_PER_REQUEST = 0.025  # s; the target is well under 10 ms, a loaded machine adds noise
PROBE_P90 = 1.0  # s; the target is 50 ms at p99 (benchmarks/hostile.py); before the fix one
# request stalled it 5.8 s, and two test runs side by side on 2 cores put the probe at ~0.5 s
PROBE_MAX = 3.0  # s; one probe the OS did not schedule for a while is not the server's doing


def _key(served: ServerProcess) -> dict[str, str]:
    return {"X-API-Key": served.key}


@contextlib.contextmanager
def probing(port: int) -> Iterator[list[float]]:
    """Poll ``/v2/health/live`` from another process (a new connection each time, so any
    worker) while the block runs; yields the latencies (seconds), filled in when it ends."""
    ctx = multiprocessing.get_context("spawn")
    ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=poll, args=(port, ready, stop, out), daemon=True)
    proc.start()
    assert ready.wait(180), "the probe did not start"
    latencies: list[float] = []
    try:
        yield latencies
    finally:
        stop.set()
        latencies += out.get(timeout=60)
        proc.join(30)


def hostile(
    served: ServerProcess, send: Callable[[httpx.Client], httpx.Response], times: int = 8
) -> tuple[list[httpx.Response], float, list[float]]:
    """At least ``times`` requests made by ``send`` (and a second's worth), 4 at once, beside a
    health probe: the answers, the server's CPU seconds per request, the probe's latencies."""
    worker = served.workers()[0]
    answers: list[httpx.Response] = []
    with httpx.Client(base_url=served.url, timeout=60) as client:
        send(client)  # warm (first-use costs are not what is measured)
        cpu = cpu_seconds(worker)
        with probing(served.port) as latencies, ThreadPoolExecutor(4) as pool:
            # At least a second of it, so that the probe has something to wait beside.
            started = time.monotonic()
            while len(answers) < times or time.monotonic() - started < 1.0:
                answers += pool.map(lambda _: send(client), range(4))
        spent = (cpu_seconds(worker) - cpu) / len(answers)
    return answers, spent, latencies


def check(
    answers: list[httpx.Response], status: int, code: str, spent: float, latencies: list[float]
) -> None:
    for r in answers:
        assert r.status_code == status, r.text[:300]
        assert r.json()["code"] == code, r.text[:300]
    assert spent < CPU_PER_REQUEST, f"{spent * 1000:.1f} ms of server CPU a request"
    assert_probe_fast(latencies)


def assert_probe_fast(latencies: list[float]) -> None:
    """The probe was answered fast beside the hostile requests (before the fix a single one
    stalled it for 5.8 s): on a loaded 2-core machine the probe's own process is sometimes
    not scheduled for a while, so the bound is on the 90th percentile, the worst kept lax."""
    assert latencies, "the probe never answered"
    ordered = sorted(latencies)
    p90 = ordered[int(len(ordered) * 0.9)]
    assert p90 < PROBE_P90, f"probe p90 {p90 * 1000:.0f} ms"
    assert ordered[-1] < PROBE_MAX, f"probe took up to {ordered[-1] * 1000:.0f} ms"


@pytest.mark.parametrize("path", ["/v1/predict/batch", INFER])
def test_an_800_kb_array_is_refused_before_parsing(served: ServerProcess, path: str) -> None:
    answers, spent, latencies = hostile(
        served, lambda c: c.post(path, content=ARRAY, headers=JSON | _key(served))
    )
    check(answers, 413, "payload_too_large", spent, latencies)
    assert "CARPRICE_MAX_JSON_VALUES" in answers[0].json()["error"]


@pytest.mark.parametrize("path", ["/v1/predict", INFER])
def test_100000_keys_are_refused_before_parsing(served: ServerProcess, path: str) -> None:
    answers, spent, latencies = hostile(
        served, lambda c: c.post(path, content=KEYS, headers=JSON | _key(served))
    )
    check(answers, 413, "payload_too_large", spent, latencies)


def test_keys_within_the_value_budget_are_refused_by_the_key_limit(served: ServerProcess) -> None:
    body = json.dumps([{f"k{i}": 0 for i in range(60)}] * 300).encode()
    body_one = json.dumps(CAR | {f"x{i}": 0 for i in range(100)}).encode()
    answers, spent, latencies = hostile(
        served,
        lambda c: c.post("/v1/predict/batch", content=body, headers=JSON | _key(served)),
    )
    check(answers, 422, "invalid_request", spent, latencies)
    r = httpx.post(f"{served.url}/v1/predict", content=body_one, headers=JSON | _key(served))
    assert (r.status_code, r.json()["code"]) == (422, "limit_exceeded")
    assert "CARPRICE_MAX_JSON_KEYS" in r.json()["error"]


@pytest.mark.parametrize("path", ["/v1/predict/batch", INFER])
@pytest.mark.parametrize("depth", [40, 1_000, 100_000])
def test_deep_nesting_is_a_422_naming_the_limit(
    served: ServerProcess, path: str, depth: int
) -> None:
    body = b"[" * depth + b"]" * depth
    answers, spent, latencies = hostile(
        served, lambda c: c.post(path, content=body, headers=JSON | _key(served)), times=4
    )
    check(answers, 422, "limit_exceeded", spent, latencies)
    assert "CARPRICE_MAX_JSON_DEPTH" in answers[0].json()["error"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/predict/batch", ARRAY),
        (INFER, KEYS),  # to /v1/predict: over its 16 KB, a 413 on the header before anything
        ("/v1/predict/batch", DEEP),
        (INFER, ARRAY),
        ("/v1/admin/users", b"{not json"),
        ("/v1/predict", b"{not json"),
    ],
)
@pytest.mark.parametrize("credentials", ["bogus", "none"])
def test_a_caller_without_valid_credentials_gets_401_before_any_parsing(
    served: ServerProcess, path: str, body: bytes, credentials: str
) -> None:
    headers = JSON | (BOGUS if credentials == "bogus" else {})
    answers, spent, latencies = hostile(
        served, lambda c: c.post(path, content=body, headers=headers), times=16
    )
    check(answers, 401, "not_authenticated", spent, latencies)
    assert all("WWW-Authenticate" in r.headers for r in answers)


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b'{"brand": "\xff"}', {}, 422, "invalid_json"),  # not UTF-8
        (json.dumps(CAR).replace("2019", "9" * 5000).encode(), {}, 422, "invalid_json"),
        (gzip.compress(json.dumps(CAR).encode()), {}, 422, "invalid_json"),
        (gzip.compress(json.dumps(CAR).encode()), {"Content-Encoding": "gzip"}, 415, None),
        (json.dumps(CAR).encode(), {"Content-Encoding": "gzip"}, 415, None),
        (json.dumps(CAR).encode(), {"Content-Encoding": "br"}, 415, None),
        (b"", {}, 422, "invalid_json"),
        (json.dumps(CAR | {"brand": "x" * 5000}).encode(), {}, 422, "limit_exceeded"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/predict", INFER])
def test_odd_bodies_get_the_documented_4xx_on_v1_and_v2(
    served: ServerProcess,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    code: str | None,
) -> None:
    r = httpx.post(served.url + path, content=body, headers=JSON | _key(served) | headers)
    assert r.status_code == status, r.text
    assert r.json()["code"] == (code or "unsupported_media_type"), r.text


def _disconnect_mid_body(served: ServerProcess, path: str, request_id: str) -> None:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {served.key}\r\nX-Request-ID: {request_id}\r\n"
        "Content-Length: 10000\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
        sock.sendall(head + b'{"inputs": [' + b" " * 1000)
        time.sleep(0.2)  # the server is reading the body when the client goes


def _status_of(served: ServerProcess, request_id: str) -> list[int]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [a for a in served.access_log() if a["request_id"] == request_id]
        if lines:
            time.sleep(0.3)  # a second line would come at once
            return [a["status"] for a in served.access_log() if a["request_id"] == request_id]
        time.sleep(0.05)
    return []


def _server_errors(served: ServerProcess) -> float:
    text = httpx.get(f"{served.url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("http_requests_total{") and 'status="5xx"' in line
    )


def _head(served: ServerProcess, path: str, length: int, key: str | None = None) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {key or served.key}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def _answer(sock: socket.socket) -> bytes:
    """The status line and headers the server sent (it may close the socket after them)."""
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


@pytest.mark.parametrize("path", ["/v1/predict/batch", INFER])
def test_too_many_values_are_refused_before_the_rest_of_the_body_comes(
    served: ServerProcess, path: str
) -> None:
    # 800 KB declared, 160 KB sent (80,000 values, past the 50,000 of CARPRICE_MAX_JSON_VALUES):
    # the 413 comes while the server still waits for 640 KB it will never need.
    sent = b"[" + b"0," * 80_000
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(_head(served, path, len(ARRAY)) + sent)
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:300]


def test_a_body_over_the_byte_limit_is_refused_unread_and_its_connection_closed(
    served: ServerProcess,
) -> None:
    # 2 MiB declared, nothing sent: refused on the header, and the connection is closed rather
    # than kept open for the server to read and throw away 2 MiB.
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(_head(served, "/v1/predict/batch", 2 * 2**20))
        answer = _answer(sock)
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:300]
        assert b"\r\nconnection: close\r\n" in answer.lower()
        sock.settimeout(10)
        rest = answer.partition(b"\r\n\r\n")[2]
        while chunk := sock.recv(65536):  # the error body, then the end of the connection
            rest += chunk
    assert json.loads(rest)["code"] == "payload_too_large"


@pytest.mark.parametrize("path", ["/v1/predict", "/v1/predict/batch", INFER])
def test_a_client_gone_mid_body_is_one_499_line_never_a_server_error(
    served: ServerProcess, path: str
) -> None:
    errors = _server_errors(served)
    request_id = f"gone-{path.replace('/', '-')}"
    _disconnect_mid_body(served, path, request_id)
    assert _status_of(served, request_id) == [499]
    assert _server_errors(served) == errors
    log = served.log.read_text()
    assert "ClientDisconnect" not in log
    assert "Traceback" not in log


def test_slow_and_half_closed_clients_cost_the_others_nothing(served: ServerProcess) -> None:
    body = json.dumps(CAR).encode()
    head = (
        "POST /v1/predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {served.key}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with probing(served.port) as latencies:
        slow = [socket.create_connection(("127.0.0.1", served.port), timeout=10) for _ in range(8)]
        for sock in slow:
            sock.sendall(head)
        for i in range(0, len(body), 40):  # ~1 s of trickling
            for sock in slow:
                sock.sendall(body[i : i + 40])
            time.sleep(0.1)
        answers = [sock.recv(65536) for sock in slow]
        # Half-closed: the whole request, then the client's side of the socket shut.
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
            sock.sendall(head + body)
            sock.shutdown(socket.SHUT_WR)
            half = sock.recv(65536)
        for sock in slow:
            sock.close()
    assert all(a.startswith(b"HTTP/1.1 200 ") for a in answers), answers[0][:200]
    assert not half.startswith(b"HTTP/1.1 5"), half[:200]
    assert_probe_fast(latencies)
    assert statistics.median(latencies) < 0.25


def test_sixteen_hostile_requests_at_once_neither_stall_nor_grow_the_worker(
    served: ServerProcess,
) -> None:
    worker = served.workers()[0]
    bodies: list[tuple[bytes, dict[str, str]]] = [
        (ARRAY, _key(served)),
        (KEYS, _key(served)),
        (ARRAY, BOGUS),
        (KEYS, BOGUS),
    ]
    rss = rss_bytes(worker)

    def send(i: int) -> Any:
        body, headers = bodies[i % len(bodies)]
        with httpx.Client(base_url=served.url, timeout=60) as client:
            return client.post("/v1/predict/batch", content=body, headers=JSON | headers)

    with probing(served.port) as latencies, ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(send, range(64)))
    assert {r.status_code for r in answers} == {401, 413}
    assert_probe_fast(latencies)
    growth = rss_bytes(worker) - rss
    assert growth < 50 * 2**20, f"worker RSS grew by {growth / 2**20:.0f} MB"


# --- the tarpit: refused answers held (serving.api.refusals) ---

DELAY = 3.0  # s; long beside what a loaded machine adds to an answer (the default is 1 s)
HOLD_MAX = 8


@pytest.fixture(scope="module")
def tarpitted(
    registry: ServingRegistry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """``carprice serve`` holding refused answers ``DELAY`` s, at most ``HOLD_MAX`` at once."""
    with server_process(
        registry.uri,
        tmp_path_factory.mktemp("tarpitted"),
        refusal_delay=str(DELAY),
        refusal_hold_max=str(HOLD_MAX),
    ) as server:
        yield server


def _timed(send: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    answer = send()
    return answer, time.monotonic() - started


def test_a_refusal_loop_gets_one_answer_per_delay_and_costs_no_cpu_meanwhile(
    tarpitted: ServerProcess,
) -> None:
    worker = tarpitted.workers()[0]
    with httpx.Client(base_url=tarpitted.url, timeout=60) as looping:
        cpu = cpu_seconds(worker)
        answers = [
            _timed(lambda: looping.post("/v1/predict/batch", content=ARRAY, headers=JSON | BOGUS))
            for _ in range(3)
        ]
        held_cpu = cpu_seconds(worker) - cpu
    for answer, took in answers:
        assert (answer.status_code, answer.json()["code"]) == (401, "not_authenticated")
        assert took >= DELAY * 0.95, f"a refusal answered after {took:.2f} s"
    assert held_cpu / 3 < CPU_PER_REQUEST, f"{held_cpu / 3 * 1000:.1f} ms of CPU a refusal"


def test_the_refusals_held_are_the_hostile_kinds_and_others_are_answered_at_once(
    tarpitted: ServerProcess,
) -> None:
    key = JSON | _key(tarpitted)
    held = {
        "413 values": ("/v1/predict/batch", ARRAY, key, 413),
        "413 one car": ("/v1/predict", json.dumps(CAR).encode() + b" " * 20_000, key, 413),
        "422 too deep": (INFER, b"[" * 1_000 + b"]" * 1_000, key, 422),
        "422 not json": ("/v1/predict", b"{not json", key, 422),
        "401 no key": ("/v1/predict", b"{}", JSON, 401),
    }
    at_once = {
        "200": ("/v1/predict", json.dumps(CAR).encode(), key, 200),
        "422 out of range": ("/v1/predict", json.dumps(CAR | {"year": 1800}).encode(), key, 422),
        "404": ("/v1/nowhere", b"{}", key, 404),
    }
    with httpx.Client(base_url=tarpitted.url, timeout=60) as client:
        for name, (path, body, headers, status) in (held | at_once).items():
            answer, took = _timed(lambda: client.post(path, content=body, headers=headers))  # noqa: B023
            assert answer.status_code == status, (name, answer.text[:300])
            if name in held:
                assert took >= DELAY * 0.95, f"{name}: answered after {took:.2f} s"
            else:
                assert took < DELAY / 2, f"{name}: answered after {took:.2f} s"


def test_past_the_hold_cap_refusals_are_answered_at_once_and_the_others_go_on(
    tarpitted: ServerProcess,
) -> None:
    def refused(_: int) -> tuple[httpx.Response, float]:
        with httpx.Client(base_url=tarpitted.url, timeout=60) as c:
            return _timed(lambda: c.post("/v1/predict", content=b"{}", headers=JSON | BOGUS))

    with ThreadPoolExecutor(2 * HOLD_MAX) as pool:
        pending = [pool.submit(refused, i) for i in range(2 * HOLD_MAX)]
        time.sleep(DELAY / 3)  # every refusal sent and waiting, or answered at once
        with httpx.Client(base_url=tarpitted.url, timeout=60) as legit:
            ok, took = _timed(lambda: legit.post("/v1/predict", json=CAR, headers=_key(tarpitted)))
        answers = [p.result() for p in pending]
    assert ok.status_code == 200, ok.text
    assert took < DELAY / 2, f"a legit request took {took:.2f} s"
    assert {a.status_code for a, _ in answers} == {401}
    held = sum(took >= DELAY * 0.95 for _, took in answers)
    assert held <= HOLD_MAX, f"{held} answers held, cap {HOLD_MAX}"
    assert len(answers) - held >= HOLD_MAX, "past the cap, refusals must be answered at once"
