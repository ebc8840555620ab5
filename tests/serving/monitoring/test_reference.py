"""The drift reference: priced by the version's model once, then read from the version's run."""

from __future__ import annotations

from pathlib import Path

import mlflow.artifacts
import pandas as pd
import pytest

from serving.errors import ModelUnservable
from serving.inference.registry import Registry
from serving.monitoring import reference
from serving.monitoring.reference import PRICED_FILE, load_reference, price_reference
from tests.serving.drift_support import DriftRegistry


def test_the_priced_sample_is_kept_in_the_run_and_read_back(
    drift_registry: DriftRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = drift_registry.registry()
    info = registry.get_version("1")
    assert info is not None
    priced = price_reference(registry, info)
    assert list(priced.columns)[-1] == "price"
    assert len(priced) == 2_000
    assert (priced["price"] > 0).all()

    first = load_reference(registry, info)  # prices it, or reads what an earlier report kept
    pd.testing.assert_frame_equal(first, priced)
    kept = mlflow.artifacts.download_artifacts(
        run_id=drift_registry.run_id,
        artifact_path=PRICED_FILE,
        dst_path=str(tmp_path),
        tracking_uri=drift_registry.uri,
    )
    pd.testing.assert_frame_equal(pd.read_parquet(kept), priced)

    def no_model(*_: object, **__: object) -> None:
        raise ModelUnservable("the model must not be loaded again")

    monkeypatch.setattr(reference, "load_version", no_model)
    pd.testing.assert_frame_equal(load_reference(registry, info), priced)


def test_without_a_kept_sample_the_model_prices_it(
    drift_registry: DriftRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = drift_registry.registry()
    info = registry.get_version("1")
    assert info is not None
    monkeypatch.setattr(reference, "PRICED_FILE", "drift-reference/not-there.parquet")
    calls: list[str] = []
    real = reference.load_version

    def counted(reg: Registry, version: object) -> object:
        calls.append("load")
        return real(reg, version)  # type: ignore[arg-type]

    monkeypatch.setattr(reference, "load_version", counted)
    sample = load_reference(registry, info)
    assert calls == ["load"]
    assert len(sample) == 2_000
