"""Registry access: aliases, versions, listing; an absent or unreachable registry fails fast."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from serving.errors import RegistryUnavailable
from serving.inference.registry import Registry
from tests.serving.live import BlackHole, closed_port
from tests.serving.support import MODEL, ServingRegistry

pytestmark = pytest.mark.timeout(120)  # a hang fails the test instead of the run


def _registry(registry: ServingRegistry, name: str = MODEL) -> Registry:
    return Registry(registry.uri, name, timeout=5)


def test_alias_resolves_to_its_version(registry: ServingRegistry) -> None:
    info = _registry(registry).version_for_alias("production")
    assert info is not None
    assert info.version == "1"
    assert info.aliases == ("production",)
    assert info.status == "READY"
    assert info.run_id


def test_unknown_alias_model_or_version_is_none(registry: ServingRegistry) -> None:
    assert _registry(registry).version_for_alias("nobody") is None
    assert _registry(registry, "no-such-model").version_for_alias("production") is None
    assert _registry(registry).get_version("99") is None
    assert _registry(registry, "no-such-model").list_versions() == []


def test_versions_are_listed_newest_first_with_aliases_and_run_metrics(
    registry: ServingRegistry,
) -> None:
    registry.set_alias("2", "challenger")
    versions = _registry(registry).list_versions()
    assert [v.version for v in versions] == ["5", "4", "3", "2", "1"]
    by_version = {v.version: v for v in versions}
    assert by_version["1"].aliases == ("production",)
    assert by_version["2"].aliases == ("challenger",)
    assert by_version["1"].metrics["holdout_mae"] == 1234.5


def test_download_brings_the_model_directory(registry: ServingRegistry, tmp_path: Path) -> None:
    path = _registry(registry).download("1", tmp_path)
    assert (path / "MLmodel").is_file()
    assert (path / "extra_files" / "data_contract.json").is_file()


def test_a_missing_sqlite_file_is_unavailable_and_not_created(tmp_path: Path) -> None:
    db = tmp_path / "nowhere" / "mlflow.db"
    with pytest.raises(RegistryUnavailable, match="file not found"):
        Registry(f"sqlite:///{db}", MODEL, 5).version_for_alias("production")
    assert not db.exists()


def test_a_tracking_server_that_refuses_connections_fails_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable):
        Registry(f"http://127.0.0.1:{closed_port()}", MODEL, 2).version_for_alias("production")
    # MLflow's defaults retry for minutes; the bound allows for a loaded machine.
    assert time.monotonic() - started < 20


def test_a_tracking_server_that_never_answers_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    hole = BlackHole()
    try:
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable):
            Registry(f"http://127.0.0.1:{hole.port}", MODEL, 1).version_for_alias("production")
        assert time.monotonic() - started < 20  # MLflow's default timeout is 120 s, retried
    finally:
        hole.close()
