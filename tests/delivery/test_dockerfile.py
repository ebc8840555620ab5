"""The Dockerfile: hadolint, and the properties the issue asks of the image."""

from __future__ import annotations

import re

from tests.delivery.conftest import ROOT, load_yaml, run, tool

DOCKERFILE = ROOT / "Dockerfile"


def stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), split per FROM."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            out.append([])
        if out:
            out[-1].append(line)
    return out


def test_hadolint_passes() -> None:
    result = run(tool("hadolint"), "--failure-threshold", "style", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_with_uv_in_the_builder_only() -> None:
    *builders, final = stages()
    builder = "\n".join(line for stage in builders for line in stage)
    assert "uv sync --frozen --no-dev --no-install-project" in builder
    assert "uv sync --frozen --no-dev --no-editable" in builder
    final_text = "\n".join(final)
    assert "uv" not in re.findall(r"\b(uv)\b", final_text), "uv must not reach the final stage"
    assert "COPY --from=builder /opt/venv /opt/venv" in final_text


def test_the_dependency_layer_is_built_before_the_source_is_copied() -> None:
    builder = stages()[-2]
    deps = next(i for i, line in enumerate(builder) if "--no-install-project" in line)
    first_source = next(i for i, line in enumerate(builder) if line.startswith("COPY serving"))
    assert deps < first_source
    assert "source=uv.lock" in builder[deps]
    assert "source=pyproject.toml" in builder[deps]


def test_final_stage_is_slim_non_root_and_has_no_compiler() -> None:
    final = stages()[-1]
    assert re.match(r"FROM \$\{PYTHON_IMAGE\} AS runtime", final[0])
    assert "slim" in DOCKERFILE.read_text().split("ARG PYTHON_IMAGE=", 1)[1].split()[0]
    text = "\n".join(final)
    for compiler in ("gcc", "g++", "build-essential", "clang", "apt-get install"):
        assert compiler not in text
    user = [line for line in final if line.startswith("USER ")]
    assert user
    assert user[-1].split()[1].split(":")[0] not in ("root", "0")


def test_healthcheck_stopsignal_and_drain_timeouts() -> None:
    text = "\n".join(stages()[-1])
    assert "STOPSIGNAL SIGTERM" in text
    health = next(line for line in stages()[-1] if line.startswith("HEALTHCHECK"))
    assert "/v2/health/live" in health
    assert ":8000/" in health
    shutdown = int(re.search(r"CARPRICE_SHUTDOWN_TIMEOUT=(\d+)", text).group(1))  # type: ignore[union-attr]
    compose = load_yaml(ROOT / "docker-compose.yml")
    grace = compose["services"]["api"]["stop_grace_period"]
    assert int(grace.rstrip("s")) > shutdown + 5, "compose must wait longer than uvicorn drains"
    assert (
        'CMD ["carprice", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]' in text
    )


def test_dockerignore_keeps_secrets_data_and_venvs_out() -> None:
    lines = (ROOT / ".dockerignore").read_text().split()
    assert lines[lines.index("*")] == "*", "deny by default"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "uv.lock", "README.md", "carprice", "pipelines", "serving"}


def test_the_image_leaves_prometheus_multiprocess_mode_to_the_api() -> None:
    """The image's other processes (the monitor, mlflow, the trainer) must not inherit
    PROMETHEUS_MULTIPROC_DIR: under a read-only root with an empty /tmp the monitor died at
    import (prometheus_client opens its files there). The API's deployments set it, and
    `carprice serve` makes a fresh one when it is unset."""
    env = [line for line in stages()[-1] if line.startswith("ENV ")]
    assert not any("PROMETHEUS_MULTIPROC_DIR" in line for line in env)
