"""``carprice drift report``: files in the issue's shape, exit 3 on drift, exit 2 on too few
rows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from carprice.cli import app
from serving.inference.model import LoadedModel
from serving.settings import get_settings
from tests.serving.drift_support import DriftRegistry
from tests.serving.monitoring.logged import log_cars

# Most features shifted: the share of drifted features passes Evidently's 0.5.
DRIFTED = (
    "year-6,km_driven*3,engine_cc*1.6,max_power_bhp*1.7,mileage_kmpl*0.6,torque_nm*1.8,"
    "fuel_type=LPG:0.7,transmission=Automatic,seller_type=Private,color=Yellow:0.8,doors=2"
)


@pytest.fixture
def env(
    drift_registry: DriftRegistry,
    log_db: tuple[str, Engine],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Engine]:
    url, engine = log_db
    monkeypatch.setenv("CARPRICE_ENV", "development")
    monkeypatch.setenv("CARPRICE_DATABASE_URL", url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", drift_registry.uri)
    monkeypatch.setenv("CARPRICE_DRIFT_MIN_ROWS", "300")
    get_settings.cache_clear()
    yield engine
    get_settings.cache_clear()


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["drift", "report", *args])
    return result.exit_code, result.stdout, result.stderr


def test_too_few_rows_is_exit_2_and_no_report(
    env: Engine,
    drift_model: LoadedModel,
    tmp_path: Path,
) -> None:
    log_cars(env, drift_model, 120, seed=50)
    code, _, err = run("--out", str(tmp_path / "out"))
    assert code == 2
    assert "only 120 logged cars of car-price/1" in err
    assert "at least 300" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--last", "10", "--since", "2026-01-01"], "either --last or --since/--until"),
        (["--since", "yesterday"], "is not an ISO 8601 time"),
        (["--since", "2026-12-02", "--until", "2026-12-01"], "--since must be before --until"),
        (["--model-version", "99"], "car-price has no version '99'"),
    ],
)
def test_bad_options_are_one_line_errors(
    env: Engine, tmp_path: Path, args: list[str], message: str
) -> None:
    code, _, err = run("--out", str(tmp_path / "out"), *args)
    assert code in (1, 2)
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_drifted_window_writes_the_report_and_exits_3(
    env: Engine,
    drift_model: LoadedModel,
    tmp_path: Path,
) -> None:
    log_cars(env, drift_model, 200, seed=51)  # older traffic, outside --last
    log_cars(env, drift_model, 600, seed=52, spec=DRIFTED, feedback=0.25)
    out = tmp_path / "out"
    code, stdout, err = run("--out", str(out), "--last", "600", "--fail-on-drift")
    assert code == 3, stdout + err
    summary = json.loads((out / "drift.json").read_text())
    assert summary["dataset_drift"] is True
    assert summary["current_rows"] == 600
    assert summary["reference_rows"] == 2_000
    assert summary["drift_share"] >= 0.5
    assert len(summary["features"]) == 16
    assert {"year", "km_driven"} <= set(summary["drifted_features"])
    assert summary["regression"]["rows"] > 100
    assert (out / "drift.html").stat().st_size > 100_000
    assert "dataset drift: yes" in stdout
    # Without the flag the same report exits 0 (cron just wants the files).
    code, _, _ = run("--out", str(out), "--last", "600")
    assert code == 0
