"""The Grafana provisioning and the dashboard JSON (their PromQL is evaluated against a real
Prometheus in tests/monitoring/test_stack.py)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2] / "monitoring" / "grafana"


def dashboard() -> dict:
    return json.loads((ROOT / "dashboards" / "carprice.json").read_text())


def test_datasource_and_provider_are_provisioned() -> None:
    sources = yaml.safe_load((ROOT / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus"
    assert source["uid"] == "prometheus"
    providers = yaml.safe_load((ROOT / "provisioning/dashboards/carprice.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/etc/grafana/dashboards"


def test_every_panel_queries_the_provisioned_datasource() -> None:
    panels = [p for p in dashboard()["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip()
            assert target["datasource"]["uid"] == "prometheus"


def test_the_issues_panels_are_there() -> None:
    titles = {p["title"] for p in dashboard()["panels"]}
    assert titles >= {
        "Request rate by route", "Latency p50 / p95 / p99", "Error ratio (4xx, 5xx)",
        "Cache hit ratio", "Predictions per model version", "Model loads, reloads and rejections",
        "Drift share", "Per-feature drift score", "Live MAE", "Prediction log: queue and drops",
    }  # fmt: skip
