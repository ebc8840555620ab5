"""Every answer is in the contract: schemathesis, all checks, against a real ``carprice serve``.

Three runs, each bounded (``--max-examples``, a fixed seed): the app's own ``/openapi.json``
with a predict key and without credentials, and the Open Inference Protocol's spec
(``tests/data/oip``, adapted in memory as its README says) with a predict key. Any failure of
any check fails the test with schemathesis' report (and its curl reproduction).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.serving.live import ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]  # setup: a model load

DATA = Path(__file__).parents[2] / "data"
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
EXAMPLES = "12"  # per operation and phase: ~1,500 cases a run against the app's own spec
# One worker: hypothesis' lambda-source parsing is not thread-safe on CPython 3.11 ("AST
# constructor recursion depth mismatch" with --workers 2).
OPTIONS = ("--max-examples", EXAMPLES, "--seed", "14", "--workers", "1")


def _run(location: str, config: Path, *args: str) -> float:
    started = time.monotonic()
    result = subprocess.run(
        [str(SCHEMATHESIS), "--config-file", str(config), "run", location, *OPTIONS, *args],
        capture_output=True,
        text=True,
        timeout=500,
        check=False,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-12_000:]
    assert re.search(r"\d+ generated, \d+ passed", report), report[-3_000:]
    return time.monotonic() - started


def test_own_openapi_with_a_predict_key(served: ServerProcess) -> None:
    _run(
        f"{served.url}/openapi.json",
        DATA / "schemathesis" / "own.toml",
        "--header",
        f"X-API-Key: {served.key}",
    )


def test_own_openapi_without_credentials(served: ServerProcess) -> None:
    _run(f"{served.url}/openapi.json", DATA / "schemathesis" / "own.toml")


def oip_spec() -> dict[str, Any]:
    """The protocol's spec with the two in-memory adaptations of tests/data/oip/README.md."""
    text = (DATA / "oip" / "open_inference_rest.yaml").read_text()
    spec: dict[str, Any] = yaml.safe_load(text.replace("${", "{"))
    errors = {
        "/v2/": "metadata_server_error_response",
        "/v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}": "metadata_model_error_response",
    }
    for path, item in spec["paths"].items():
        schema = errors.get(path, "inference_error_response")
        for method in ("get", "post"):
            if method in item:
                item[method]["responses"]["4XX"] = {
                    "description": "An error status, typically 400 (inference_rest.md)",
                    "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}
                    },
                }
    return spec


def test_open_inference_protocol_spec(served: ServerProcess, tmp_path: Path) -> None:
    spec = tmp_path / "open_inference_rest.yaml"
    spec.write_text(yaml.safe_dump(oip_spec()))
    _run(
        str(spec),
        DATA / "schemathesis" / "oip.toml",
        "--url",
        served.url,
        "--header",
        f"X-API-Key: {served.key}",
    )


def test_every_ref_of_the_openapi_document_resolves(served: ServerProcess) -> None:
    document = httpx.get(f"{served.url}/openapi.json", timeout=10).json()
    text = str(document)
    assert "$defs" not in text
    refs = set(re.findall(r"'\$ref': '([^']+)'", text))
    assert refs
    schemas = document["components"]["schemas"]
    assert {r for r in refs if r.removeprefix("#/components/schemas/") not in schemas} == set()
    paths = document["paths"]
    batch = paths["/v1/predict/batch"]["post"]["requestBody"]["content"]["application/json"]
    assert (batch["schema"]["minItems"], batch["schema"]["maxItems"]) == (1, 1000)
    users = paths["/v1/admin/users"]["post"]["requestBody"]["content"]["application/json"]
    assert users["schema"]["properties"]["password"]["minLength"] == 8
    for path, item in paths.items():
        for method, operation in item.items():
            statuses = set(operation["responses"])
            if operation.get("security"):
                assert {"401", "429"} <= statuses, (method, path)
            if "requestBody" in operation:
                assert {"413", "415", "422"} <= statuses, (method, path)
            for status, response in operation["responses"].items():
                if status >= "400":
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorResponse"), (method, path, status)
