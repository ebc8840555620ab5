"""serving/README.md's /v1 curl and /v2 tritonclient examples, run as written against a real
server (only its address changed) with the demo key file ``make run`` leaves."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.main import create_app
from tests.serving.live import LiveServer, live_server
from tests.serving.support import ServingRegistry, make_settings

pytestmark = pytest.mark.timeout(120)

README = Path(__file__).resolve().parents[3] / "serving" / "README.md"


def _block(language: str, containing: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.S)
    found = [b for b in blocks if containing in b]
    assert len(found) == 1, f"one {language} block with {containing!r} in {README}"
    return found[0]


@pytest.fixture
def server(
    registry: ServingRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LiveServer]:
    with live_server(create_app(make_settings(registry))) as live:
        (tmp_path / ".carprice-demo-key").write_text(live.headers["X-API-Key"] + "\n")
        monkeypatch.chdir(tmp_path)
        yield live


@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl here")
def test_the_curl_example_prices_a_car(server: LiveServer) -> None:
    script = _block("bash", "KEY=$(cat .carprice-demo-key)\ncurl -s localhost:8000/v1/predict")
    script = script.replace("localhost:8000", f"127.0.0.1:{server.port}")
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["price"] > 0, done.stdout


def test_the_tritonclient_example_prices_a_car(
    server: LiveServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _block("python", "tritonclient").replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")
    exec(compile(code, str(README), "exec"), {})  # noqa: S102 - the README's own example
    printed = capsys.readouterr().out
    assert re.fullmatch(r"\[\d+(\.\d*)?\]\n", printed), printed
