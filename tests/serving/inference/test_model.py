"""Loading a version: signature check, smoke test, and predictions equal to the pipeline's."""

from __future__ import annotations

import copy
from pathlib import Path

import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from mlflow.models import Model
from mlflow.types import ColSpec, DataType, Schema, TensorSpec

from pipelines.contract import build_contract
from pipelines.train import signature_for
from serving.errors import ModelUnservable
from serving.inference.features import FEATURE_NAMES, make_row
from serving.inference.model import LoadedModel, check_signature, load_version, to_frame
from serving.inference.registry import Registry
from tests.serving.support import MODEL, ServingRegistry, cars, listings

pytestmark = pytest.mark.timeout(120)  # a hang fails the test instead of the run


@pytest.fixture(scope="module")
def reg(registry: ServingRegistry) -> Registry:
    return Registry(registry.uri, MODEL, 10)


@pytest.fixture(scope="module")
def loaded(reg: Registry) -> LoadedModel:
    info = reg.get_version("1")
    assert info is not None
    return load_version(reg, info)


def test_the_pipelines_signature_matches_the_api() -> None:
    assert check_signature(signature_for(build_contract())) == []


def test_signature_differences_are_each_named() -> None:
    signature = copy.deepcopy(signature_for(build_contract()))
    cols = signature.inputs.inputs
    cols[0] = ColSpec(DataType.long, "brand")  # wrong type
    cols[8] = ColSpec(DataType.long, "year")  # refuses the float64 numbers the API sends
    cols[10] = ColSpec(DataType.double, "engine_cc", required=True)  # optional in the API
    del cols[-1]  # doors missing
    cols.append(ColSpec(DataType.string, "vin"))  # not in the API
    signature.outputs = Schema([TensorSpec(np.dtype("int64"), (-1, 3))])
    problems = " | ".join(check_signature(signature))
    for text in (
        "'brand' is 'long'",
        "'year' is 'long'",
        "'engine_cc' is required",
        "'doors' is missing",
        "'vin'",
        "output",
    ):
        assert text in problems
    assert check_signature(None) == ["the model has no signature"]


def test_loaded_model_predicts_what_the_logged_pipeline_predicts(
    loaded: LoadedModel, registry: ServingRegistry, tmp_path: Path
) -> None:
    x, _ = listings(300, seed=31)
    reference = mlflow.sklearn.load_model(
        Registry(registry.uri, MODEL, 10).download("1", tmp_path)
    ).predict(x)
    rows = [
        make_row({str(k): (None if pd.isna(v) else v) for k, v in r.items()})
        for r in x.to_dict("records")
    ]
    np.testing.assert_allclose(loaded.predict(rows), reference, rtol=1e-12)


def test_loaded_model_knows_its_version_example_and_contract(loaded: LoadedModel) -> None:
    assert (loaded.name, loaded.version) == (MODEL, "1")
    assert len(loaded.example) == 5
    assert set(loaded.example[0]) == set(FEATURE_NAMES)
    assert loaded.contract is not None
    assert loaded.contract["target"] == "selling_price"


def test_rows_become_the_frame_the_pipeline_was_trained_on() -> None:
    batch = [*cars(5), make_row({"brand": "BMW"})]
    frame = to_frame([make_row(c) for c in batch])
    assert list(frame.columns) == list(FEATURE_NAMES)
    assert frame["brand"].dtype == object
    assert frame["year"].dtype == np.float64
    assert np.isnan(frame["year"].iloc[-1])
    assert frame["color"].iloc[-1] is np.nan or pd.isna(frame["color"].iloc[-1])


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        ("3", "does not match the API's schema: input 'engine_cc' is required"),
        ("4", "non-finite or non-positive prices"),
        ("5", "failed to load"),
    ],
)
def test_versions_that_cannot_be_served_are_refused_with_the_reason(
    reg: Registry, version: str, reason: str
) -> None:
    info = reg.get_version(version)
    assert info is not None
    with pytest.raises(ModelUnservable, match=reason.replace("(", r"\(").replace(")", r"\)")):
        load_version(reg, info)


def test_the_logged_example_is_what_the_smoke_test_predicts(reg: Registry, tmp_path: Path) -> None:
    path = reg.download("1", tmp_path)
    example = Model.load(str(path / "MLmodel")).load_input_example(str(path))
    assert isinstance(example, pd.DataFrame)
    assert len(example) == 5


def test_without_the_compiled_path_the_models_own_predict_answers_the_same(
    reg: Registry, loaded: LoadedModel
) -> None:
    info = reg.get_version("1")
    assert info is not None
    plain = load_version(reg, info, compiled=False)
    assert plain.compiled is None
    assert loaded.compiled is not None
    rows = [make_row(car) for car in cars(300, seed=21)]
    np.testing.assert_array_equal(plain.predict(rows), loaded.predict(rows))
