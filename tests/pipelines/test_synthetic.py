from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.catalog import CATALOG
from pipelines.contract import FEATURES, TARGET
from pipelines.synthetic import MISSING_RATES, NOISE_SIGMA, generate, write_csv


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    write_csv(generate(2_000, seed=3).listings, a)
    write_csv(generate(2_000, seed=3).listings, b, chunk=333)  # chunking must not change bytes
    assert a.read_bytes() == b.read_bytes()


def test_other_seed_other_data() -> None:
    a = generate(500, seed=1).listings
    b = generate(500, seed=2).listings
    assert not a.equals(b)


def test_columns_and_rows(listings: pd.DataFrame) -> None:
    assert list(listings.columns) == [*FEATURES, TARGET]
    assert len(listings) == 3_000
    assert (listings[TARGET] > 0).all()


def test_missing_values_between_two_and_six_percent() -> None:
    df = generate(50_000, seed=11).listings
    for column in MISSING_RATES:
        rate = df[column].isna().mean()
        assert 0.02 <= rate <= 0.065, (column, rate)
    assert len(MISSING_RATES) >= 7


def test_joint_distributions_are_plausible() -> None:
    df = generate(50_000, seed=5).listings
    age = 2026 - df["year"]
    km_per_year = df["km_driven"] / (age + 0.5)
    diesel = df["fuel_type"] == "Diesel"
    assert km_per_year[diesel].median() > 1.3 * km_per_year[~diesel].median()
    assert (
        df.groupby("fuel_type")["torque_nm"].median()
        / df.groupby("fuel_type")["max_power_bhp"].median()
    )["Diesel"] > 2
    tiers = df["brand"].map({b: v.tier for b, v in CATALOG.items()})
    assert (
        df.loc[tiers == "luxury", TARGET].median() > 2 * df.loc[tiers == "budget", TARGET].median()
    )
    young = df[age <= 2]
    old = df[age >= 12]
    assert young[TARGET].median() > 2 * old[TARGET].median()
    for brand, spec in CATALOG.items():
        assert set(df.loc[df["brand"] == brand, "model"]) <= {m.name for m in spec.models}


def test_noise_has_its_documented_size() -> None:
    sample = generate(50_000, seed=9)
    log_ratio = np.log(sample.listings[TARGET].to_numpy() / sample.clean_price)
    assert log_ratio.std() == pytest.approx(NOISE_SIGMA, rel=0.05)


def test_rows_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        generate(0, seed=1)


def test_cli_sample_writes_the_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from carprice.cli import app

    out = tmp_path / "raw" / "cars.csv"
    result = CliRunner().invoke(
        app, ["data", "sample", "--rows", "100", "--seed", "1", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(out)) == 100
