"""The validate stage refuses every kind of bad input with a report that names the problem."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipelines.contract import DataContract
from pipelines.synthetic import write_csv
from pipelines.validate import DataFileError, read_raw, validate


def _check(path: Path, contract: DataContract):
    return validate(read_raw(path), contract, source=str(path))


def _write(df: pd.DataFrame, tmp_path: Path) -> Path:
    path = tmp_path / "bad.csv"
    write_csv(df, path)
    return path


def test_good_data_passes(csv_file: Path, contract: DataContract) -> None:
    report = _check(csv_file, contract)
    assert report.success, report.summary()
    assert report.rows == 3_000
    assert report.evaluated > 40


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(DataFileError, match="empty"):
        read_raw(path)


def test_binary_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cars.csv"
    path.write_bytes(bytes(range(256)) * 100)
    with pytest.raises(DataFileError, match="binary"):
        read_raw(path)


def test_header_only_fails_row_count(
    tmp_path: Path, listings: pd.DataFrame, contract: DataContract
) -> None:
    report = _check(_write(listings.head(0), tmp_path), contract)
    assert not report.success
    failure = next(
        f for f in report.failures if f.expectation == "expect_table_row_count_to_be_between"
    )
    assert "too few rows" in failure.message
    assert "found 0" in failure.message


def test_missing_column_is_named(
    tmp_path: Path, listings: pd.DataFrame, contract: DataContract
) -> None:
    report = _check(_write(listings.drop(columns=["km_driven"]), tmp_path), contract)
    assert [(f.expectation, f.column) for f in report.failures] == [
        ("expect_column_to_exist", "km_driven")
    ]
    assert "km_driven" in report.summary()


def test_non_numeric_value_reports_rows_and_examples(
    tmp_path: Path, listings: pd.DataFrame, contract: DataContract
) -> None:
    df = listings.astype({"engine_cc": object})
    df.loc[df.index[:7], "engine_cc"] = "1.6L"
    report = _check(_write(df, tmp_path), contract)
    failure = next(
        f for f in report.failures if f.expectation == "expect_column_values_to_match_regex"
    )
    assert failure.column == "engine_cc"
    assert failure.unexpected_count == 7
    assert failure.examples == ["1.6L"]


@pytest.mark.parametrize("price", [0, -100])
def test_non_positive_price_is_refused(
    tmp_path: Path, listings: pd.DataFrame, contract: DataContract, price: int
) -> None:
    df = listings.copy()
    df.loc[df.index[:3], "selling_price"] = price
    report = _check(_write(df, tmp_path), contract)
    failure = next(f for f in report.failures if f.column == "selling_price")
    assert failure.unexpected_count == 3
    assert "> 0" in failure.message


def test_unknown_categories_over_the_allowed_rate(
    tmp_path: Path, listings: pd.DataFrame, contract: DataContract
) -> None:
    df = listings.copy()
    df.loc[df.index[:60], "brand"] = "Tesla"  # 2 % > 1 % allowed
    report = _check(_write(df, tmp_path), contract)
    failure = next(f for f in report.failures if f.column == "brand")
    assert failure.expectation == "expect_column_values_to_be_in_set"
    assert failure.examples == ["Tesla"]


def test_unknown_categories_under_the_allowed_rate_pass(
    tmp_path: Path, listings: pd.DataFrame, contract: DataContract
) -> None:
    df = listings.copy()
    df.loc[df.index[:15], "brand"] = "Tesla"  # 0.5 %
    assert _check(_write(df, tmp_path), contract).success


def test_entirely_null_column(
    tmp_path: Path, listings: pd.DataFrame, contract: DataContract
) -> None:
    df = listings.copy()
    df["mileage_kmpl"] = None
    report = _check(_write(df, tmp_path), contract)
    failure = next(f for f in report.failures if f.column == "mileage_kmpl")
    assert failure.expectation == "expect_column_values_to_not_be_null"
    assert failure.unexpected_count == len(df)


def test_out_of_range_value(tmp_path: Path, listings: pd.DataFrame, contract: DataContract) -> None:
    df = listings.copy()
    df.loc[df.index[0], "year"] = 1850
    report = _check(_write(df, tmp_path), contract)
    assert [f.column for f in report.failures] == ["year"]
    assert report.failures[0].examples == [1850.0]


def test_report_json_is_complete(
    tmp_path: Path, listings: pd.DataFrame, contract: DataContract
) -> None:
    import json

    df = listings.drop(columns=["color"])
    body = json.loads(_check(_write(df, tmp_path), contract).to_json())
    assert body["success"] is False
    assert body["failures"][0]["column"] == "color"
