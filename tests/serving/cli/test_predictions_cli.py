"""``carprice predictions export|stats|prune`` and ``carprice feedback import`` on a real log
(SQLite, and PostgreSQL through ``CARPRICE_PREDICTION_LOG_URL``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from carprice.cli import app
from serving.settings import get_settings
from serving.store import predictions
from serving.store.database import create_db_engine, upgrade
from tests.serving.services import postgres_database
from tests.serving.store.test_predictions import record

NOW = datetime.now(UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def log(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Engine]:
    """A log with 4 cars: 3 of version 1 today (one request of 2 cars), 1 of version 2 40 days
    ago; the CLI pointed at it."""
    monkeypatch.setenv("CARPRICE_ENV", "development")
    monkeypatch.setenv("CARPRICE_DATABASE_URL", f"sqlite:///{tmp_path}/app.db")
    with postgres_database() if request.param == "postgresql" else _sqlite(tmp_path) as url:
        monkeypatch.setenv("CARPRICE_PREDICTION_LOG_URL", url)
        get_settings.cache_clear()
        upgrade(url)
        engine = create_db_engine(url)
        records = [
            record("a", 0, at=NOW - timedelta(minutes=3)),
            record("a", 1, at=NOW - timedelta(minutes=3), year=2020),
            record("b", 0, at=NOW - timedelta(minutes=1), cached=True),
            record("old", 0, at=NOW - timedelta(days=40), model_version="2"),
        ]
        predictions.append(engine, pa.Table.from_pylist(records, schema=predictions.LOGGED_SCHEMA))
        yield engine
        engine.dispose()
        get_settings.cache_clear()


class _sqlite:  # noqa: N801 - used like postgres_database()
    def __init__(self, tmp_path: Path) -> None:
        self.url = f"sqlite:///{tmp_path}/log.db"

    def __enter__(self) -> str:
        return self.url

    def __exit__(self, *exc: object) -> None:
        return None


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_both_formats(log: Engine, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"log{suffix}"
    code, stdout, stderr = run("predictions", "export", "--out", str(out))
    assert code == 0, stderr
    assert "wrote 4 logged cars" in stdout
    df = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    assert tuple(df.columns) == predictions.EXPORT_COLUMNS
    assert df.request_id.tolist() == ["a", "a", "b", "old"]  # in the order they were logged
    assert df[(df.request_id == "a") & (df.row == 1)].year.tolist() == [2020]
    assert df.actual_price.isna().all()


def test_export_windows(log: Engine, tmp_path: Path) -> None:
    out = tmp_path / "w.csv"
    assert run("predictions", "export", "--last", "2", "--out", str(out))[0] == 0
    assert len(pd.read_csv(out)) == 2
    since = (NOW - timedelta(days=1)).date().isoformat()
    assert run("predictions", "export", "--since", since, "--out", str(out))[0] == 0
    assert set(pd.read_csv(out).request_id) == {"a", "b"}
    assert run("predictions", "export", "--model-version", "2", "--out", str(out))[0] == 0
    assert pd.read_csv(out).request_id.tolist() == ["old"]
    assert run("predictions", "export", "--model-version", "9", "--out", str(out))[0] == 0
    assert tuple(pd.read_csv(out).columns) == predictions.EXPORT_COLUMNS  # header only


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--out", "x.json"], "must end in .csv or .parquet"),
        (["--last", "3", "--since", "2026-01-01", "--out", "x.csv"], "not both"),
        (["--since", "yesterday", "--out", "x.csv"], "not an ISO 8601"),
        (["--out", "/nonexistent/dir/x.csv"], "not a directory"),
    ],
)
@pytest.mark.parametrize("log", ["sqlite"], indirect=True)  # no database needed: arguments
def test_export_refuses_bad_arguments_in_one_line(
    log: Engine, args: list[str], message: str
) -> None:
    code, _, stderr = run("predictions", "export", *args)
    assert code == 1
    assert message in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_stats_and_prune(log: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run("predictions", "stats")
    assert code == 0
    assert "2 version-days, 4 logged cars" in out
    assert f"{NOW:%Y-%m-%d}" in out
    code, _, stderr = run("predictions", "prune")
    assert code == 1
    assert "--older-than" in stderr
    code, out, _ = run("predictions", "prune", "--older-than", "30")
    assert (code, out.strip()) == (0, "deleted 1 logged cars older than 30 days")
    monkeypatch.setenv("CARPRICE_PREDICTION_LOG_RETENTION_DAYS", "0.0001")
    get_settings.cache_clear()
    code, out, _ = run("predictions", "prune")  # the retention setting (0.0001 days: 9 s)
    assert code == 0
    assert "deleted 3 logged cars" in out


def test_feedback_import_counts_matched_unknown_duplicates(log: Engine, tmp_path: Path) -> None:
    csv = tmp_path / "truth.csv"
    csv.write_text("request_id,row,actual_price\na,0,9000\na,1,9100.5\nb,0,8000\nb,0,1\nzz,0,5\n")
    code, out, stderr = run("feedback", "import", str(csv))
    assert code == 0, stderr
    assert out.strip() == "matched 3, unknown 1, duplicates 1"
    code, out, _ = run("feedback", "import", str(csv))
    assert out.strip() == "matched 0, unknown 1, duplicates 4"
    df = predictions.window(log, predictions.Window())
    assert df.set_index(["request_id", "row"]).actual_price.dropna().to_dict() == {
        ("a", 0): 9000.0,
        ("a", 1): 9100.5,
        ("b", 0): 8000.0,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("request_id,price\na,1\n", "no column row, actual_price"),
        ("request_id,row,actual_price\na,0,-3\n", "line 2: actual_price must be a positive"),
        ("request_id,row,actual_price\na,0,abc\n", "line 2: actual_price"),
        ("request_id,row,actual_price\na,x,3\n", "line 2: row must be a whole number"),
        ("request_id,row,actual_price\n,0,3\n", "line 2: empty request_id"),
    ],
)
@pytest.mark.parametrize("log", ["sqlite"], indirect=True)
def test_feedback_import_refuses_a_bad_file_in_one_line(
    log: Engine, tmp_path: Path, text: str, message: str
) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text(text)
    code, _, stderr = run("feedback", "import", str(csv))
    assert code == 1
    assert message in stderr
    assert len(stderr.strip().splitlines()) == 1
