from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.contract import DataContract
from pipelines.params import PreprocessParams
from pipelines.preprocess import clean, read_listings, split


def test_read_listings_types(csv_file: Path, contract: DataContract) -> None:
    df = read_listings(csv_file, contract)
    assert df["brand"].dtype == object
    assert df["engine_cc"].dtype == np.float64
    assert df["engine_cc"].isna().any()


def test_clean_drops_duplicates_and_impossible_rows(
    listings: pd.DataFrame, contract: DataContract
) -> None:
    df = listings.astype({"engine_cc": "float64", "seats": "float64"})
    dupes = df.head(5)
    bad = df.iloc[5:8].copy()
    bad["selling_price"] = [0.0, -1.0, np.nan]
    odd = df.iloc[8:9].copy()
    odd["seats"] = 40.0
    messy = pd.concat([df, dupes, bad, odd], ignore_index=True)
    out, counts = clean(messy, contract)
    assert counts["duplicates_dropped"] == 5
    assert counts["out_of_range_dropped"] == 4
    assert counts["rows_out"] == len(out)
    assert (out["selling_price"] > 0).all()
    assert out["seats"].max() <= 9


def test_clean_blanks_unknown_categories(listings: pd.DataFrame, contract: DataContract) -> None:
    df = listings.copy()
    df.loc[df.index[:4], "color"] = "Plaid"
    out, counts = clean(df, contract)
    assert counts["unknown_categories_blanked"] == 4
    assert "Plaid" not in set(out["color"].dropna())
    assert len(out) == len(df)


def test_split_is_seeded_and_disjoint(listings: pd.DataFrame) -> None:
    params = PreprocessParams(test_size=0.25, seed=3, reference_rows=500)
    train, test, ref = split(listings, params)
    train2, test2, _ = split(listings, params)
    assert train.index.equals(train2.index)
    assert test.index.equals(test2.index)
    assert len(test) == 750
    assert not set(train.index) & set(test.index)
    assert len(ref) == 500
    assert set(ref.index) <= set(train.index)


@pytest.mark.parametrize(
    ("rows", "test_size", "seed"), [(3_000, 0.2, 42), (2_999, 0.33, 7), (101, 0.5, 1)]
)
def test_split_is_scikit_learns_train_test_split(
    listings: pd.DataFrame, rows: int, test_size: float, seed: int
) -> None:
    from sklearn.model_selection import train_test_split

    df = listings.head(rows)
    train, test, _ = split(df, PreprocessParams(test_size=test_size, seed=seed))
    expected_train, expected_test = train_test_split(df, test_size=test_size, random_state=seed)
    assert train.equals(expected_train)
    assert test.equals(expected_test)
    assert train.index.equals(expected_train.index)


def test_reference_is_capped_by_train_size(listings: pd.DataFrame) -> None:
    _, _, ref = split(
        listings.head(100), PreprocessParams(test_size=0.5, seed=1, reference_rows=5000)
    )
    assert len(ref) == 50
