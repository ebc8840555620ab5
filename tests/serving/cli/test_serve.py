"""`carprice serve`'s start-up: the Prometheus multiprocess directory begins empty."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.cli.serve import fresh_multiprocess_dir


def test_unset_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert fresh_multiprocess_dir() is None


def test_files_of_a_previous_run_are_removed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"old")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.db").write_bytes(b"old")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert fresh_multiprocess_dir() == tmp_path
    assert list(tmp_path.iterdir()) == []


def test_a_missing_directory_is_created(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    target = tmp_path / "a" / "prometheus"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(target))
    assert fresh_multiprocess_dir() == target
    assert target.is_dir()
