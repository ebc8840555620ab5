"""The real `dvc repro` in a temporary copy of the repo, on a small sample, against a temp MLflow.

One module-scoped copy runs: a first repro (version 1 -> production), a no-op repro, an
experiment with deliberately worse params (version 2 -> challenger, production kept), and then
every kind of bad input, each of which must fail the pipeline and leave dvc.lock, the outputs
and the production alias untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from benchmarks.pipeline import copy_project
from pipelines.synthetic import generate, write_csv

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ROWS = 1_500
# A stage takes seconds here; this only stops a hung command, with room for a saturated machine.
TIMEOUT = 1_800


@dataclass
class Repo:
    path: Path
    env: dict[str, str]
    tracking_uri: str

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            list(args), cwd=self.path, env=self.env, capture_output=True, text=True, timeout=TIMEOUT
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def production_version(self) -> str:
        return self.alias_version("production")

    def alias_version(self, alias: str) -> str:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return str(client.get_model_version_by_alias("car-price", alias).version)

    def snapshot(self) -> dict[str, str]:
        """Hashes of dvc.lock and every pipeline output."""
        files = [self.path / "dvc.lock", self.path / "models" / "train.json"]
        files += sorted((self.path / "data" / "processed").glob("*.parquet"))
        files += sorted((self.path / "reports").glob("*.json"))
        files = [f for f in files if f.name != "validation.json"]  # the failure report itself
        return {
            str(f.relative_to(self.path)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files
        }


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    path = tmp_path_factory.mktemp("repo")
    copy_project(path)
    (path / "dvc.lock").unlink(missing_ok=True)
    params = yaml.safe_load((path / "params.yaml").read_text())
    params["validate"]["min_rows"] = 500
    params["preprocess"]["reference_rows"] = 300
    params["train"].update({"max_iter": 80, "cv_folds": 2})
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_csv(generate(ROWS, seed=1).listings, path / "data" / "raw" / "cars.csv")

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    env.update(
        MLFLOW_TRACKING_URI=uri,
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.com",
    )
    r = Repo(path, env, uri)
    r.run("git", "init", "-q", "-b", "main")
    r.run("dvc", "commit", "-f", "-q", "data.dvc")
    r.run("git", "add", "-A")
    r.run("git", "commit", "-q", "-m", "copy")
    return r


def test_first_repro_registers_and_promotes(repo: Repo) -> None:
    proc = repo.run("dvc", "repro")
    assert "@production" in proc.stdout
    assert repo.production_version() == "1"
    promotion = json.loads((repo.path / "reports" / "promotion.json").read_text())
    assert promotion["promoted"] is True
    metrics = json.loads(repo.run("dvc", "metrics", "show", "--json").stdout)
    assert "reports/metrics.json" in json.dumps(metrics)
    assert (repo.path / "reports" / "plots" / "residuals.png").exists()
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-q", "-m", "first run")


def test_a_fresh_clone_trains_registers_and_stays_clean(
    repo: Repo, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from mlflow import MlflowClient

    clone_path = tmp_path_factory.mktemp("clone") / "carprice"
    repo.run("git", "clone", "-q", str(repo.path), str(clone_path))
    raw = Path("data") / "raw" / "cars.csv"
    (clone_path / raw).parent.mkdir(parents=True, exist_ok=True)
    (clone_path / raw).write_bytes((repo.path / raw).read_bytes())  # as `make data` makes it
    uri = f"sqlite:///{tmp_path_factory.mktemp('clone-mlflow') / 'mlflow.db'}"
    clone = Repo(clone_path, repo.env | {"MLFLOW_TRACKING_URI": uri}, uri)
    proc = clone.run("dvc", "repro")
    assert "@production" in proc.stdout  # its own registry got the model
    assert "Running stage 'validate'" not in proc.stdout  # its result is committed
    assert clone.run("git", "status", "--porcelain").stdout == ""
    assert "up to date" in clone.run("dvc", "status").stdout
    head = clone.run("git", "rev-parse", "HEAD").stdout.strip()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert client.get_model_version("car-price", "1").tags["git_commit"] == head
    train = json.loads((clone_path / "models" / "train.json").read_text())
    assert train == json.loads((repo.path / "models" / "train.json").read_text())


def test_second_repro_is_a_no_op(repo: Repo) -> None:
    before = repo.snapshot()
    proc = repo.run("dvc", "repro")
    assert "Data and pipelines are up to date" in proc.stdout
    assert repo.snapshot() == before


def test_experiment_with_worse_params_becomes_challenger(repo: Repo) -> None:
    proc = repo.run("dvc", "exp", "run", "-S", "train.max_iter=3", "-S", "train.learning_rate=0.05")
    assert "@challenger" in proc.stdout
    assert repo.production_version() == "1"
    assert repo.alias_version("challenger") == "2"
    promotion = json.loads((repo.path / "reports" / "promotion.json").read_text())
    assert promotion["promoted"] is False
    assert promotion["production_mae"] < promotion["candidate_mae"]
    shown = repo.run("dvc", "exp", "show", "--json").stdout
    assert "max_iter" in shown
    # workspace, main and the experiment each have their holdout metrics (committed with git)
    found = list(_metric_files(json.loads(shown)))
    assert len(found) >= 3
    assert all({"mae", "rmse", "r2"} <= set(m.get("data", {})) for m in found)
    diff = json.loads(repo.run("dvc", "metrics", "diff", "--json").stdout)
    assert diff["reports/metrics.json"]["mae"]["old"] is not None  # HEAD has them
    plots = repo.run("dvc", "plots", "diff", "-o", str(repo.path / "dvc_plots"))
    assert "failed to load" not in plots.stdout + plots.stderr
    repo.run("git", "checkout", "--", "params.yaml", "dvc.lock")
    repo.run("dvc", "repro")  # back to the committed state (restored from the DVC cache)


def _metric_files(node: object) -> Iterator[dict[str, Any]]:
    """Every ``reports/metrics.json`` entry in ``dvc exp show --json`` output."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reports/metrics.json" and isinstance(value, dict):
                yield value
            else:
                yield from _metric_files(value)
    elif isinstance(node, list):
        for item in node:
            yield from _metric_files(item)


def _listings() -> pd.DataFrame:
    return generate(ROWS, seed=1).listings


def _set(column: str, value: object, rows: int | None = None) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        df = _listings().astype({column: object})
        df.loc[df.index[: rows or len(df)], column] = value
        write_csv(df, path)

    return write


def _frame(fn: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    return lambda path: write_csv(fn(_listings()), path)


BAD_INPUTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "empty file": (lambda p: p.write_bytes(b""), "is empty"),
    "header only": (_frame(lambda df: df.head(0)), "too few rows"),
    "missing column": (_frame(lambda df: df.drop(columns=["year"])), "column 'year'"),
    "non-numeric value": (_set("km_driven", "lots", rows=5), "values are not numbers"),
    "negative price": (_set("selling_price", -500, rows=3), "column 'selling_price'"),
    "zero price": (_set("selling_price", 0, rows=3), "column 'selling_price'"),
    "unknown category": (_set("fuel_type", "Electric", rows=100), "unknown categories"),
    "entirely null column": (_set("seats", None), "more missing values"),
    "binary file": (lambda p: p.write_bytes(os.urandom(4096) + b"\x00" * 64), "binary file"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_and_changes_nothing(repo: Repo, case: str) -> None:
    raw = repo.path / "data" / "raw" / "cars.csv"
    good = raw.read_bytes()
    before = repo.snapshot()
    write, expected = BAD_INPUTS[case]
    try:
        write(raw)
        proc = repo.run("dvc", "repro", check=False)
        assert proc.returncode != 0
        assert expected in proc.stderr + proc.stdout
        assert "Running stage 'preprocess'" not in proc.stdout
        assert repo.snapshot() == before
        assert repo.production_version() == "1"
        report = json.loads((repo.path / "reports" / "validation.json").read_text())
        assert report["success"] is False
    finally:
        raw.write_bytes(good)
