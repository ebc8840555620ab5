"""deploy/k8s: every overlay built with Kustomize and validated against the Kubernetes schemas;
the KServe InferenceService against its CRD's schema."""

from __future__ import annotations

import gzip
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from serving.settings import Settings
from tests.delivery.conftest import ROOT, load_all_yaml, run, tool

K8S = ROOT / "deploy" / "k8s"
BUILDS = ["base", "overlays/staging", "overlays/production", "kserve"]
WORKLOADS = ("Deployment", "InferenceService")
KUBERNETES_VERSION = "1.33.0"  # the oldest version the manifests must still validate against


@cache
def build(name: str) -> list[dict[str, Any]]:
    result = run(tool("kubectl"), "kustomize", str(K8S / name))
    assert result.returncode == 0, result.stderr
    return load_all_yaml(result.stdout)


def kinds(name: str) -> dict[str, dict[str, Any]]:
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in build(name)}


@pytest.mark.parametrize("name", BUILDS[:3])
def test_overlay_validates_against_the_kubernetes_schema(name: str, tmp_path: Path) -> None:
    built = tmp_path / "built.yaml"
    built.write_text(run(tool("kubectl"), "kustomize", str(K8S / name)).stdout)
    for version in (KUBERNETES_VERSION, "1.37.0"):
        result = run(tool("kubernetes-validate"), "--strict", "--quiet", "-k", version, str(built))
        assert result.returncode == 0, result.stdout + result.stderr


def test_secret_template_validates_and_holds_no_secret() -> None:
    path = K8S / "base" / "secret.example.yaml"
    result = run(tool("kubernetes-validate"), "--strict", "--quiet", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    (secret,) = load_all_yaml(path.read_text())
    for value in secret["stringData"].values():
        assert "REPLACE" in value
    assert (
        "secret.example.yaml"
        not in (K8S / "base" / "kustomization.yaml").read_text().split("resources:", 1)[1]
    )


def test_the_base_has_every_part() -> None:
    assert set(kinds("base")) == {
        "ServiceAccount/carprice",
        "ConfigMap/carprice-config",
        "Deployment/carprice-api",
        "Service/carprice-api",
        "HorizontalPodAutoscaler/carprice-api",
        "PodDisruptionBudget/carprice-api",
        "Deployment/carprice-monitor",
        "Service/carprice-monitor",
    }


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = (
        doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else doc["spec"]["predictor"]
    )
    result: list[dict[str, Any]] = spec["containers"]
    return result


def test_api_probes_resources_and_drain() -> None:
    for name in BUILDS[:3]:
        api = kinds(name)["Deployment/carprice-api"]
        (container,) = containers(api)
        assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        assert {"requests", "limits"} <= set(container["resources"])
        command = container["command"]
        assert int(command[command.index("--workers") + 1]) >= 2
        port = int(command[command.index("--port") + 1])
        assert container["ports"][0]["containerPort"] == port
        config = kinds(name)["ConfigMap/carprice-config"]["data"]
        pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
        grace = api["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > pre_stop + float(config["CARPRICE_SHUTDOWN_TIMEOUT"])
        pod = api["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert {"name": "PROMETHEUS_MULTIPROC_DIR", "value": "/tmp/prometheus"} in container["env"]
        assert api["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"


@pytest.mark.parametrize("name", BUILDS)
def test_only_the_api_runs_prometheus_in_multiprocess_mode(name: str) -> None:
    workloads = {k: d for k, d in kinds(name).items() if d["kind"] in WORKLOADS}
    assert workloads
    for key, doc in workloads.items():
        for container in containers(doc):
            multiprocess = any(
                e["name"] == "PROMETHEUS_MULTIPROC_DIR" for e in container.get("env", [])
            )
            api = key in ("Deployment/carprice-api", "InferenceService/car-price")
            assert multiprocess == api, key


def test_hpa_and_pdb_target_the_api() -> None:
    for name in BUILDS[:3]:
        parts = kinds(name)
        hpa = parts["HorizontalPodAutoscaler/carprice-api"]["spec"]
        assert hpa["scaleTargetRef"]["name"] == "carprice-api"
        assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
        pdb = parts["PodDisruptionBudget/carprice-api"]["spec"]
        assert pdb["minAvailable"] < hpa["minReplicas"] or pdb["minAvailable"] == 0
        labels = parts["Deployment/carprice-api"]["spec"]["template"]["metadata"]["labels"]
        assert pdb["selector"]["matchLabels"].items() <= labels.items()
        service = parts["Service/carprice-api"]["spec"]
        assert service["selector"].items() <= labels.items()


def test_every_carprice_key_is_a_real_setting() -> None:
    fields = set(Settings.model_fields)
    keys = list(kinds("base")["ConfigMap/carprice-config"]["data"])
    (secret,) = load_all_yaml((K8S / "base" / "secret.example.yaml").read_text())
    keys += list(secret["stringData"])
    for key in keys:
        if key.startswith("CARPRICE_"):
            assert key.removeprefix("CARPRICE_").lower() in fields, key
    # The containers read exactly these two sources.
    for name in ("Deployment/carprice-api", "Deployment/carprice-monitor"):
        (container,) = containers(kinds("base")[name])
        refs = [next(iter(source.values()))["name"] for source in container["envFrom"]]
        assert refs == ["carprice-config", "carprice-secrets"]


def test_overlays_set_namespace_and_image() -> None:
    for name, namespace in (
        ("overlays/staging", "carprice-staging"),
        ("overlays/production", "carprice"),
    ):
        for doc in build(name):
            assert doc["metadata"]["namespace"] == namespace
        (container,) = containers(kinds(name)["Deployment/carprice-api"])
        assert re.fullmatch(r"ghcr\.io/OWNER/carprice:\w+", container["image"])


@cache
def inference_service_schema() -> jsonschema.protocols.Validator:
    """A validator of the CRD's schema, built once (checking the 600 kB schema itself is slow)."""
    raw = (K8S / "schemas" / "inferenceservice-v1beta1.json.gz").read_bytes()
    return jsonschema.Draft7Validator(json.loads(gzip.decompress(raw)))


def test_inference_service_validates_against_the_kserve_crd_schema() -> None:
    (isvc,) = build("kserve")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["kind"] == "InferenceService"
    inference_service_schema().validate(isvc)
    # The schema does catch mistakes: an unknown field and a wrongly typed one.
    broken = json.loads(json.dumps(isvc))
    broken["spec"]["predictor"]["containers"][0]["prots"] = []
    with pytest.raises(jsonschema.ValidationError, match="prots"):
        inference_service_schema().validate(broken)
    broken = json.loads(json.dumps(isvc))
    broken["spec"]["predictor"]["minReplicas"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        inference_service_schema().validate(broken)


def test_inference_service_runs_the_same_image_as_a_custom_predictor() -> None:
    (isvc,) = build("kserve")
    (container,) = containers(isvc)
    (api,) = containers(kinds("base")["Deployment/carprice-api"])
    assert container["name"] == "kserve-container"
    assert container["image"].rsplit(":", 1)[0] == api["image"].rsplit(":", 1)[0]
    command = container["command"]
    port = int(command[command.index("--port") + 1])
    assert port == 8080 == container["ports"][0]["containerPort"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": port}
    assert command[:2] == api["command"][:2]
    assert container["envFrom"] == api["envFrom"]
