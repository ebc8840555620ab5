"""One servable model version: loaded from the registry, checked, smoke-tested.

:func:`load_version` is the only way to get a :class:`LoadedModel`, and it refuses (with
:class:`ModelUnservable`) a version whose signature does not match the API's feature schema,
that has no input example, that fails to load, or whose prediction on its own logged input
example is not a list of finite, positive prices.

The estimator stays behind :meth:`LoadedModel.predict` (rows in, prices out), so how rows become
model input can change (micro-batching, a compiled fast path) without touching the callers.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import ThreadpoolController

from serving.errors import ModelUnservable
from serving.inference.cars import Cars
from serving.inference.fastpath import CompiledPipeline, compile_pipeline
from serving.inference.features import BY_NAME, FEATURE_NAMES, FEATURES, Row, make_row
from serving.inference.registry import Registry, VersionInfo

log = logging.getLogger(__name__)

# MLflow signature types that accept what the API sends for each feature kind: strings, and
# float64 numbers. The pipeline declares numbers ``any`` (so pyfunc takes a CSV's int64 and
# float64 columns alike); versions registered before that declare ``double``.
_SIGNATURE_TYPES = {
    "categorical": ("string",),
    "integer": ("any", "double"),
    "float": ("any", "double"),
}


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model version in memory, ready to predict."""

    name: str
    version: str
    run_id: str | None
    estimator: Any
    example: tuple[Row, ...]
    contract: dict[str, Any] | None
    loaded_at: float
    threads: int = 1
    compiled: CompiledPipeline | None = None
    """The fast path (serving.inference.fastpath), when the pipeline has the shape it knows."""

    def predict(self, rows: Sequence[Row]) -> np.ndarray:
        """Prices (float64, one per car) for validated cars (:class:`Cars`, or rows)."""
        if self.compiled is not None:
            return self.compiled.predict(rows)
        return self.predict_reference(rows)

    @property
    def fast(self) -> bool:
        """True when predictions are cheap enough to run on the event loop (small batches)."""
        return self.compiled is not None

    def predict_reference(self, rows: Sequence[Row]) -> np.ndarray:
        """Prices from the estimator's own ``predict`` (DataFrame in), the slow reference."""
        frame = to_frame(rows)
        # OpenMP's thread count is per calling thread: set it in the thread that predicts.
        with _openmp().limit(limits=self.threads, user_api="openmp"):
            prices = self.estimator.predict(frame)
        return np.asarray(prices, dtype=np.float64).reshape(-1)


@functools.cache
def _openmp() -> ThreadpoolController:
    """The native thread pools of the loaded libraries (scanned once, after sklearn loads)."""
    return ThreadpoolController()


def to_frame(rows: Sequence[Row]) -> pd.DataFrame:
    """Cars (or rows) as the DataFrame the pipeline was trained on: object categoricals with
    NaN for missing, float64 numbers, columns in contract order."""
    cars = Cars.from_rows(rows)
    columns: dict[str, Any] = {}
    for f, values in zip(FEATURES, cars.columns, strict=True):
        if f.numeric:
            columns[f.name] = np.array(values, dtype=np.float64)  # None -> NaN
        else:
            columns[f.name] = np.array([np.nan if v is None else v for v in values], dtype=object)
    return pd.DataFrame(columns, columns=list(FEATURE_NAMES))


def check_signature(signature: Any) -> list[str]:
    """Differences between a model's MLflow signature and the API's schema (empty = match).

    Each feature must be an input of the right type, required exactly when the API requires
    it, and no other input may exist; the output must be one float64 per row.
    """
    if signature is None or signature.inputs is None:
        return ["the model has no signature"]
    problems: list[str] = []
    inputs = {spec["name"]: spec for spec in signature.inputs.to_dict() if "name" in spec}
    for f in FEATURES:
        spec = inputs.get(f.name)
        if spec is None:
            problems.append(f"input {f.name!r} is missing")
            continue
        want = _SIGNATURE_TYPES[f.kind]
        if spec.get("type") not in want:
            problems.append(
                f"input {f.name!r} is {spec.get('type')!r}, the API sends {want[0]!r} values"
            )
        if bool(spec.get("required", True)) == f.nullable:
            problems.append(
                f"input {f.name!r} is {'required' if f.nullable else 'optional'} in the model "
                f"but {'optional' if f.nullable else 'required'} in the API"
            )
    problems += [f"input {name!r} is not in the API" for name in inputs if name not in BY_NAME]
    if len(inputs) != len(signature.inputs.to_dict()):
        problems.append("the model's inputs are not named columns")
    outputs = signature.outputs.to_dict() if signature.outputs is not None else []
    if len(outputs) != 1 or not _is_price_output(outputs[0]):
        problems.append(f"the output is {outputs!r}, expected one float64 per row")
    return problems


def _is_price_output(spec: dict[str, Any]) -> bool:
    if spec.get("type") == "tensor":
        tensor = spec.get("tensor-spec", {})
        return tensor.get("dtype") in ("float64", "float32") and len(tensor.get("shape", ())) == 1
    return spec.get("type") in ("double", "float")


def example_rows(example: Any) -> tuple[Row, ...]:
    """The logged input example as rows (NaN and None become missing)."""
    if not isinstance(example, pd.DataFrame) or example.empty:
        raise ModelUnservable(
            "the model was logged without a tabular input example", reason="invalid_artifact"
        )
    missing = [c for c in FEATURE_NAMES if c not in example.columns]
    if missing:
        raise ModelUnservable(
            f"the input example lacks columns {missing}", reason="invalid_artifact"
        )
    rows = []
    for record in example[list(FEATURE_NAMES)].to_dict(orient="records"):
        clean = {str(k): (None if _is_missing(v) else v) for k, v in record.items()}
        rows.append(make_row(clean))
    return tuple(rows)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def smoke_test(model: LoadedModel) -> None:
    """Predict the logged input example; raise :class:`ModelUnservable` unless every price is
    a finite positive number."""
    try:
        prices = model.predict(model.example)
    except Exception as exc:
        raise ModelUnservable(
            f"{model.name}/{model.version} failed its smoke test: {type(exc).__name__}: {exc}",
            reason="smoke_test_failed",
        ) from exc
    if prices.shape != (len(model.example),):
        raise ModelUnservable(
            f"{model.name}/{model.version} returned shape {prices.shape} for "
            f"{len(model.example)} example rows",
            reason="smoke_test_failed",
        )
    if not bool(np.all(np.isfinite(prices))) or not bool(np.all(prices > 0)):
        raise ModelUnservable(
            f"{model.name}/{model.version} predicted non-finite or non-positive prices on its "
            f"input example: {prices.tolist()[:5]}",
            reason="smoke_test_failed",
        )


def load_version(
    registry: Registry, info: VersionInfo, threads: int = 1, compiled: bool = True
) -> LoadedModel:
    """Download, load, check and smoke-test one version (blocking: call in a worker thread).

    ``threads`` is the number of OpenMP threads each prediction may use; ``compiled=False``
    skips the fast path (:mod:`serving.inference.fastpath`): every prediction uses the model's own
    ``predict``.

    Raises:
        ModelUnservable: the version cannot be served (the message says why).
        RegistryUnavailable: the registry could not be read.
    """
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="carprice-model-"))
    try:
        path = registry.download(info.version, tmp)
        model = _load_from(path, info, threads, compiled)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    smoke_test(model)
    log.info(
        "loaded %s/%s",
        info.name,
        info.version,
        extra={"fields": {"seconds": round(time.perf_counter() - started, 3)}},
    )
    return model


def _load_from(path: Path, info: VersionInfo, threads: int, compiled: bool) -> LoadedModel:
    from mlflow.models import Model

    label = f"{info.name}/{info.version}"
    try:
        meta = Model.load(str(path / "MLmodel"))
    except Exception as exc:
        raise ModelUnservable(
            f"{label} has no readable MLmodel file: {exc}", reason="invalid_artifact"
        ) from exc
    problems = check_signature(meta.signature)
    if problems:
        raise ModelUnservable(
            f"{label} does not match the API's schema: " + "; ".join(problems),
            problems,
            reason="signature_mismatch",
        )
    if "sklearn" not in meta.flavors:
        raise ModelUnservable(f"{label} is not a scikit-learn model", reason="invalid_artifact")
    try:
        example = meta.load_input_example(str(path))
    except Exception as exc:
        raise ModelUnservable(
            f"{label} has an unreadable input example: {exc}", reason="invalid_artifact"
        ) from exc
    rows = example_rows(example)
    try:
        import mlflow.sklearn

        estimator = mlflow.sklearn.load_model(str(path))
    except Exception as exc:
        raise ModelUnservable(f"{label} failed to load: {type(exc).__name__}: {exc}") from exc
    contract_file = path / "extra_files" / "data_contract.json"
    contract = None
    if contract_file.is_file():
        try:
            contract = json.loads(contract_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable data_contract.json (%s)", label, exc)
    return LoadedModel(
        name=info.name,
        version=info.version,
        run_id=info.run_id,
        estimator=estimator,
        example=rows,
        contract=contract,
        loaded_at=time.time(),
        threads=threads,
        compiled=_compile(estimator, rows, label) if compiled else None,
    )


def _compile(estimator: Any, example: tuple[Row, ...], label: str) -> CompiledPipeline | None:
    """The fast path for ``estimator``, kept only if it reproduces ``predict`` on the example."""
    compiled = compile_pipeline(estimator)
    if compiled is None:
        log.info("%s: no fast path for this pipeline shape; using its own predict", label)
        return None
    try:
        fast = compiled.predict(example)
        reference = np.asarray(estimator.predict(to_frame(example)), dtype=np.float64)
    except Exception as exc:
        log.warning("%s: fast path failed on the input example (%s); not used", label, exc)
        return None
    if not np.array_equal(fast, reference.reshape(-1)):
        log.warning("%s: fast path differs from predict on the input example; not used", label)
        return None
    return compiled
