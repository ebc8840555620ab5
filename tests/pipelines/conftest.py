"""Shared fixtures for the pipeline tests: small generated data sets, written like the real one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from pipelines.contract import DataContract, build_contract
from pipelines.synthetic import generate, write_csv


@pytest.fixture(scope="session")
def listings() -> pd.DataFrame:
    """3,000 generated listings (seed 7)."""
    return generate(3_000, seed=7).listings


@pytest.fixture(scope="session")
def contract() -> DataContract:
    return build_contract(min_rows=100, max_unknown_category_rate=0.01)


@pytest.fixture
def csv_file(tmp_path: Path, listings: pd.DataFrame) -> Path:
    """The listings as a CSV file in a temp dir, as the generator writes them."""
    path = tmp_path / "cars.csv"
    write_csv(listings, path)
    return path


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real MLflow tracking store and registry (SQLite in a temp dir), selected for MLflow."""
    import mlflow

    from pipelines import tracking

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setattr(tracking, "ARTIFACT_ROOT", tmp_path / "artifacts")
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("car-price", artifact_location=(tmp_path / "artifacts").as_uri())
    mlflow.set_experiment("car-price")
    yield uri
    mlflow.set_tracking_uri(None)
