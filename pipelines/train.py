"""Stage ``train``: cross-validate the price model, fit it on all training rows, hand it on.

The model is a scikit-learn Pipeline: categorical columns are encoded to ordinals (missing and
unknown values become NaN), numeric columns pass through, and a HistGradientBoostingRegressor
with native categorical support fits ``log(price)`` (errors in car prices are multiplicative).
Missing values are imputed inside the booster: each split learns which side missing values go
to, which beats a constant fill for values that are missing at random.

The stage writes the fitted model as a pickle (``models/model.pkl``, a DVC-cached output) and
``models/train.json``: the model's fingerprint (sha256 of that pickle) and the CV metrics,
which the data, params and code determine (training is seeded), so a re-run on the same inputs
writes the same bytes and ``dvc.lock`` does not change. It does not import MLflow (~4-5 s):
``evaluate`` logs the run with :func:`log_run` (params, CV and holdout metrics, the model with
its signature, input example, data contract and drift reference sample) and registers it.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from pipelines.atomic import atomic_path, write_text
from pipelines.contract import CATEGORICAL, FEATURES, NUMERICAL, TARGET, DataContract
from pipelines.params import Params, TrainParams, load_params
from pipelines.preprocess import PROCESSED
from pipelines.process import finish
from pipelines.progress import Progress
from pipelines.threads import concurrent_fits, limit_openmp
from pipelines.validate import contract_from

RUN_INFO = Path("models/train.json")
MODEL_FILE = Path("models/model.pkl")
"""The fitted Pipeline, pickled: only this pipeline writes and reads it (evaluate)."""


def build_model(params: TrainParams, contract: DataContract) -> Any:
    """An unfitted Pipeline (encoding + gradient boosting) from the train params."""
    encoder = OrdinalEncoder(
        categories=[contract.column(c).categories or "auto" for c in CATEGORICAL],
        handle_unknown="use_encoded_value",
        unknown_value=np.nan,
        encoded_missing_value=np.nan,
        dtype=np.float64,
    )
    columns = ColumnTransformer(
        [("cat", encoder, list(CATEGORICAL)), ("num", "passthrough", list(NUMERICAL))],
        verbose_feature_names_out=False,
    )
    booster = HistGradientBoostingRegressor(
        learning_rate=params.learning_rate,
        max_iter=params.max_iter,
        max_leaf_nodes=params.max_leaf_nodes,
        min_samples_leaf=params.min_samples_leaf,
        l2_regularization=params.l2_regularization,
        early_stopping=params.early_stopping,
        categorical_features=list(range(len(CATEGORICAL))),
        random_state=params.seed,
    )
    regressor: Any = booster
    if params.log_target:
        regressor = TransformedTargetRegressor(booster, func=np.log, inverse_func=np.exp)
    return Pipeline([("columns", columns), ("regressor", regressor)])


def split_xy(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Features in contract order (numbers as float64, categories as text), and the target."""
    x = df[list(FEATURES)].astype({c: "float64" for c in NUMERICAL})
    return x, df[TARGET].astype("float64")


def iterations(model: Any) -> int:
    """Boosting iterations the fitted Pipeline's booster ran (early stopping may cut them)."""
    regressor = model[-1]
    booster = getattr(regressor, "regressor_", regressor)
    return int(booster.n_iter_)


def _fold_scores(y: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    err = predicted - y
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "r2": 1.0 - float(np.sum(err**2)) / ss_tot if ss_tot > 0 else 0.0,
    }


def cross_validated_metrics(
    model: Any,
    x: pd.DataFrame,
    y: pd.Series,
    params: TrainParams,
    progress: Progress | None = None,
    pool: Executor | None = None,
) -> dict[str, float]:
    """K-fold RMSE/MAE/R² (mean and std over folds); empty when ``cv_folds`` < 2.

    Each fold prints its scores, boosting iterations and time to ``progress`` when given.
    With ``pool`` the folds are fitted as its tasks (see :func:`pipelines.threads.concurrent_fits`),
    else one after the other; the scores are the same either way (every fit is seeded).
    """
    from sklearn.base import clone

    if params.cv_folds < 2:
        return {}
    folds = KFold(params.cv_folds, shuffle=True, random_state=params.seed)
    y_values = y.to_numpy(dtype=np.float64)

    def run_fold(i: int, fit_idx: np.ndarray, test_idx: np.ndarray) -> dict[str, float]:
        started = time.perf_counter()
        with limit_openmp(len(fit_idx)):
            fitted = clone(model).fit(x.iloc[fit_idx], y.iloc[fit_idx])
            predicted = np.asarray(fitted.predict(x.iloc[test_idx]))
        fold = _fold_scores(y_values[test_idx], predicted)
        if progress is not None:
            progress.say(
                f"CV fold {i}/{params.cv_folds}: {iterations(fitted)} boosting iterations, "
                f"RMSE {fold['rmse']:.0f}, MAE {fold['mae']:.0f}, R² {fold['r2']:.4f} "
                f"({time.perf_counter() - started:.1f} s)"
            )
        return fold

    splits = list(zip(*folds.split(x), strict=True))
    numbers = range(1, params.cv_folds + 1)
    results = list((pool.map if pool else map)(run_fold, numbers, *splits))
    out = {}
    for name in ("rmse", "mae", "r2"):
        values = [fold[name] for fold in results]
        out[f"cv_{name}"] = float(np.mean(values))
        out[f"cv_{name}_std"] = float(np.std(values))
    return out


def fit(params: TrainParams, contract: DataContract, x: pd.DataFrame, y: pd.Series) -> Any:
    """Fit the model on all training rows.

    Args:
        params: train hyper-parameters.
        contract: the data contract (category vocabularies).
        x: features in contract order.
        y: prices.

    Returns:
        The fitted Pipeline.
    """
    with limit_openmp(len(x)):
        return build_model(params, contract).fit(x, y)


class ModelFileError(ValueError):
    """``models/model.pkl`` is not the model ``models/train.json`` describes."""


def save_model(model: Any, path: Path = MODEL_FILE) -> str:
    """Pickle the fitted model to ``path`` (atomically).

    Returns:
        The model's fingerprint: sha256 of the pickle, equal for equal models (training is
        seeded), so it identifies the model in ``models/train.json`` without an MLflow run id.
    """
    blob = pickle.dumps(model, protocol=5)
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)
    return hashlib.sha256(blob).hexdigest()


def load_model(fingerprint: str, path: Path = MODEL_FILE) -> Any:
    """The model :func:`save_model` wrote, refused unless its sha256 is ``fingerprint``.

    Only this pipeline's own ``train`` output is unpickled, and only when it is the very file
    ``models/train.json`` recorded (a stale or foreign file never gets loaded).

    Raises:
        ModelFileError: the file is missing or is not the recorded model.
    """
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{path} cannot be read ({exc}); run `dvc repro train`") from exc
    if hashlib.sha256(blob).hexdigest() != fingerprint:
        raise ModelFileError(
            f"{path} is not the model in {RUN_INFO} (fingerprint {fingerprint[:12]}); "
            "run `dvc repro --force train`"
        )
    return pickle.loads(blob)  # noqa: S301 - the pipeline's own output, checked above


def signature_for(contract: DataContract) -> Any:
    """The model signature, built from the contract (so optional columns are marked optional).

    Categoricals are strings. Numbers are ``any``: the CSV the project writes, read the
    ordinary way, gives int64 for an integer column without gaps and float64 for one with a
    missing value or decimals, and JSON clients send ints and floats alike; MLflow's ``long``
    refuses float64 and its ``double`` refuses int64, so the model itself converts numbers to
    float (the booster does) and its contract's ranges travel in ``data_contract.json``.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema, TensorSpec
    from mlflow.types.schema import AnyType

    cols = [
        ColSpec(
            DataType.string if c.kind == "categorical" else AnyType(),  # type: ignore[no-untyped-call]
            c.name,
            required=not c.nullable,
        )
        for c in contract.feature_columns
    ]
    return ModelSignature(
        inputs=Schema(list[ColSpec | TensorSpec](cols)),
        outputs=Schema([TensorSpec(np.dtype("float64"), (-1,))]),
    )


# Types skops does not trust by default that this model is built from (checked by a test):
# declaring them lets MLflow store and load the model without pickle.
SKOPS_TRUSTED_TYPES = [
    "functools.partial",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.utils.validation.check_array",
]


def pip_requirements() -> list[str]:
    """Pinned requirements of the model, given explicitly: MLflow's inference of them
    loads the model in a subprocess and costs ~10 s per run."""
    from importlib.metadata import version

    return [
        f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "scikit-learn", "skops", "numpy", "pandas")
    ]


def log_run(
    model: Any,
    params: Params,
    contract: DataContract,
    metrics: dict[str, float],
    example: pd.DataFrame,
    reference: pd.DataFrame,
    tags: dict[str, str],
    artifacts: Sequence[tuple[Path, str | None]] = (),
) -> dict[str, str]:
    """Log params, metrics, tags and the model (with contract and reference sample) as one run.

    Args:
        artifacts: more files or folders for the run, each with its artifact folder (None: the
            run's root), e.g. the holdout plots and reports ``evaluate`` makes.

    Returns:
        ``run_id``, ``model_uri`` and ``model_id`` of the logged model.
    """
    import mlflow

    flat = {f"train.{k}": v for k, v in params.train.model_dump().items()}
    flat |= {f"preprocess.{k}": v for k, v in params.preprocess.model_dump().items()}
    with mlflow.start_run() as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params(flat)
        mlflow.log_metrics(metrics)
        mlflow.set_tags(tags)
        contract_path = Path(tmp) / "data_contract.json"
        contract_path.write_text(contract.to_json(), encoding="utf-8")
        reference_path = Path(tmp) / "reference.parquet"
        reference.to_parquet(reference_path, index=False)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature_for(contract),
            input_example=example,
            serialization_format="skops",
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            pip_requirements=pip_requirements(),
            extra_files=[str(contract_path), str(reference_path)],
            metadata={"feature_columns": list(FEATURES), "target": TARGET},
        )
        mlflow.log_artifact(str(contract_path))
        for path, folder in artifacts:
            if path.is_dir():
                mlflow.log_artifacts(str(path), artifact_path=folder)
            else:
                mlflow.log_artifact(str(path), artifact_path=folder)
        mlflow.set_tag("model_id", info.model_id)
    return {"run_id": run.info.run_id, "model_uri": info.model_uri, "model_id": info.model_id}


def main() -> int:
    """DVC entry point: cross-validate, fit, write the model and its fingerprint."""
    progress = Progress("train")
    params = load_params()
    contract = contract_from(params)
    with progress.step("read data/processed/train.parquet"):
        x, y = split_xy(pd.read_parquet(PROCESSED / "train.parquet"))

    def fit_all() -> Any:
        started = time.perf_counter()
        model = fit(params.train, contract, x, y)
        progress.say(
            f"fit on all {len(x):,} rows: {iterations(model)} boosting iterations "
            f"(max {params.train.max_iter}) ({time.perf_counter() - started:.1f} s)"
        )
        return model

    workers = concurrent_fits(len(x))
    what = f"{params.train.cv_folds}-fold cross-validation and the fit on all {len(x):,} rows"
    unfitted = build_model(params.train, contract)
    with progress.step(f"{what} ({workers} at a time)"):
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                final = pool.submit(fit_all)  # first: it is the longest fit
                metrics = cross_validated_metrics(unfitted, x, y, params.train, progress, pool)
                model = final.result()
        else:
            # In the main thread: a multi-threaded fit started from another thread took twice
            # as long (300,000 rows: 6.3 s against 2.7-3.1 s).
            metrics = cross_validated_metrics(unfitted, x, y, params.train, progress)
            model = fit_all()
    metrics["train_rows"] = float(len(x))
    model_hash = save_model(model)
    # Only what the data, params and code determine: no run id, so dvc.lock stays put.
    write_text(RUN_INFO, json.dumps({"fingerprint": model_hash, "metrics": metrics}, indent=2))
    progress.done(
        f"CV RMSE {metrics.get('cv_rmse', float('nan')):.0f}, "
        f"MAE {metrics.get('cv_mae', float('nan')):.0f}"
    )
    return 0


if __name__ == "__main__":
    finish(main())
