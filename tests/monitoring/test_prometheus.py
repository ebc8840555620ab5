"""The shipped Prometheus config and alert rules, checked and unit-tested by promtool itself."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2] / "monitoring" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is missing: run `bash scripts/prometheus.sh` (Debian's prometheus)")
    return subprocess.run(
        [tool, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def test_config_is_valid() -> None:
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_rules_are_valid() -> None:
    done = promtool("check", "rules", "rules.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_rule_unit_tests_pass() -> None:
    done = promtool("test", "rules", "tests/rules_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_firing_and_a_quiet_test() -> None:
    rules = yaml.safe_load((ROOT / "rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert alerts >= {
        "CarpriceHigh5xxRatio", "CarpriceHighP99Latency", "CarpriceNoModelReady",
        "CarpriceDatasetDrift", "CarpriceLiveMAEHigh", "CarpricePredictionLogDrops",
        "CarpriceMonitorStale",
    }  # fmt: skip
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in (ROOT / "tests").glob("*.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    assert alerts - fires == set(), "alerts without a test that fires them"
    assert alerts - quiet == set(), "alerts without a test where they stay quiet"
