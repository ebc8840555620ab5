"""Data tests: the data `data.dvc` tracks is what the generator makes, and it meets the contract."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from pipelines.params import load_params
from pipelines.synthetic import generate, write_csv
from pipelines.validate import contract_from, read_raw, validate

pytestmark = pytest.mark.data
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def default_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data the README's command makes: 20,000 rows, seed 42."""
    path = tmp_path_factory.mktemp("raw") / "cars.csv"
    write_csv(generate(20_000, seed=42).listings, path)
    return path


def test_generator_reproduces_the_tracked_data(default_data: Path) -> None:
    tracked = yaml.safe_load((ROOT / "data.dvc").read_text())["outs"][0]
    assert tracked["path"] == "data/raw/cars.csv"
    assert hashlib.md5(default_data.read_bytes()).hexdigest() == tracked["md5"]  # noqa: S324 - DVC's own hash
    assert default_data.stat().st_size == tracked["size"]


def test_default_data_meets_the_contract(default_data: Path) -> None:
    params = load_params(ROOT / "params.yaml")
    report = validate(read_raw(default_data), contract_from(params), source=str(default_data))
    assert report.success, report.summary()
