"""GitHub Actions: actionlint, and what each workflow must do."""

from __future__ import annotations

import re
from typing import Any

from tests.delivery.conftest import ROOT, load_yaml, run, tool

WORKFLOWS = ROOT / ".github" / "workflows"


def workflow(name: str) -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(WORKFLOWS / name)
    return data


def triggers(data: dict[Any, Any]) -> Any:
    """The ``on:`` block (YAML 1.1 reads the bare key ``on`` as True)."""
    return data[True] if True in data else data["on"]


def steps(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in data["jobs"].values() for step in job.get("steps", [])]


def test_actionlint_passes() -> None:
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    assert [p.rsplit("/", 1)[1] for p in files] == ["cd.yml", "ci.yml", "retrain.yml"]
    result = run(tool("actionlint"), "-no-color", *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkout_v5_and_no_secret_in_the_files() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        text = path.read_text()
        for action in re.findall(r"uses: (actions/checkout@\S+)", text):
            assert action == "actions/checkout@v5", path.name
        # Secrets come from the repository's secrets, never a literal.
        for line in text.splitlines():
            if re.search(r"(PASSWORD|SECRET|TOKEN|KEY)[A-Z_]*: ", line):
                assert "${{ secrets." in line or "${{ vars." in line, f"{path.name}: {line}"


def test_ci_runs_lint_and_tests_with_redis_and_postgres() -> None:
    ci = workflow("ci.yml")
    assert {"lint", "test", "image"} <= set(ci["jobs"])
    services = ci["jobs"]["test"]["services"]
    assert services["postgres"]["image"].startswith("postgres")
    assert services["redis"]["image"].startswith("redis")
    runs = [s.get("run", "") for s in steps(ci)]
    assert "make lint" in runs
    assert "make test" in runs


def test_cd_pushes_sha_and_semver_tags_to_ghcr_and_deploys() -> None:
    cd = workflow("cd.yml")
    assert triggers(cd)["push"] == {"branches": ["main"], "tags": ["v*.*.*"]}
    meta = next(s for s in steps(cd) if s.get("uses", "").startswith("docker/metadata-action"))
    assert "ghcr.io/" in meta["with"]["images"]
    tags = meta["with"]["tags"]
    assert "type=sha" in tags
    assert "type=semver,pattern={{version}}" in tags
    push = next(s for s in steps(cd) if s.get("uses", "").startswith("docker/build-push-action"))
    assert push["with"]["push"] is True
    text = (WORKFLOWS / "cd.yml").read_text()
    assert "secrets.RENDER_DEPLOY_HOOK_URL" in text
    assert (ROOT / "render.yaml").exists()
    assert "kubectl apply -k ." in text
    assert "deploy/k8s/overlays/production" in text


def test_retrain_pulls_repros_pushes_and_summarises() -> None:
    retrain = workflow("retrain.yml")
    assert set(triggers(retrain)) == {"workflow_dispatch", "schedule"}
    text = "\n".join(s.get("run", "") for s in steps(retrain))
    for command in (
        "dvc pull",
        "dvc repro",
        "dvc push",
        "dvc metrics diff",
        "reports/promotion.json",
    ):
        assert command in text, command
    assert "$GITHUB_STEP_SUMMARY" in text
    assert (
        retrain["jobs"]["retrain"]["env"]["MLFLOW_TRACKING_URI"]
        == "${{ secrets.MLFLOW_TRACKING_URI }}"
    )


def test_render_blueprint_serves_the_ghcr_image_with_its_probe() -> None:
    render = load_yaml(ROOT / "render.yaml")
    (service,) = render["services"]
    assert service["runtime"] == "image"
    assert service["image"]["url"].startswith("ghcr.io/")
    assert service["healthCheckPath"] == "/v2/health/ready"
    keys = {env["key"]: env for env in service["envVars"]}
    assert keys["CARPRICE_JWT_SECRET"] == {"key": "CARPRICE_JWT_SECRET", "generateValue": True}
    for key in ("MLFLOW_TRACKING_URI", "CARPRICE_DATABASE_URL", "CARPRICE_CACHE_URL"):
        assert keys[key]["sync"] is False, f"{key} is set in the dashboard, not the file"
