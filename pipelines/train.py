"""Stage ``train``: fit the price model, cross-validate it and log it to MLflow as one run.

The model is a scikit-learn Pipeline: categorical columns are encoded to ordinals (missing and
unknown values become NaN), numeric columns pass through, and a HistGradientBoostingRegressor
with native categorical support fits ``log(price)`` (errors in car prices are multiplicative).
Missing values are imputed inside the booster: each split learns which side missing values go
to, which beats a constant fill for values that are missing at random.

The run carries the params, cross-validated metrics, the model with its signature and input
example, the data contract and the drift reference sample (as model artifacts, so serving gets
them with the model), and the git commit and DVC data hash as tags.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.model_selection import KFold, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from pipelines.atomic import write_text
from pipelines.contract import CATEGORICAL, FEATURES, NUMERICAL, TARGET, DataContract
from pipelines.params import Params, TrainParams, load_params
from pipelines.preprocess import PROCESSED
from pipelines.validate import contract_from

RUN_INFO = Path("models/train.json")


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


def cross_validated_metrics(
    model: Any, x: pd.DataFrame, y: pd.Series, params: TrainParams
) -> dict[str, float]:
    """K-fold RMSE/MAE/R² (mean and std over folds); empty when ``cv_folds`` < 2."""
    if params.cv_folds < 2:
        return {}
    folds = KFold(params.cv_folds, shuffle=True, random_state=params.seed)
    scores = cross_validate(
        model,
        x,
        y,
        cv=folds,
        scoring={
            "rmse": "neg_root_mean_squared_error",
            "mae": "neg_mean_absolute_error",
            "r2": "r2",
        },
        n_jobs=1,
    )
    out = {}
    for name in ("rmse", "mae", "r2"):
        values = scores[f"test_{name}"] * (1 if name == "r2" else -1)
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
    return build_model(params, contract).fit(x, y)


def signature_for(contract: DataContract) -> Any:
    """The model signature, built from the contract (so optional columns are marked optional)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema, TensorSpec

    cols = [
        ColSpec(
            DataType.string if c.kind == "categorical" else DataType.double,
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


def _pip_requirements() -> list[str]:
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
) -> dict[str, str]:
    """Log params, metrics, tags and the model (with contract and reference sample) as one run.

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
            pip_requirements=_pip_requirements(),
            extra_files=[str(contract_path), str(reference_path)],
            metadata={"feature_columns": list(FEATURES), "target": TARGET},
        )
        mlflow.log_artifact(str(contract_path))
    return {"run_id": run.info.run_id, "model_uri": info.model_uri, "model_id": info.model_id}


def main() -> int:
    """DVC entry point: train, log to MLflow, record the run for ``evaluate``."""
    from pipelines import tracking

    params = load_params()
    contract = contract_from(params)
    train_df = pd.read_parquet(PROCESSED / "train.parquet")
    reference = pd.read_parquet(PROCESSED / "reference.parquet")
    x, y = split_xy(train_df)
    metrics = cross_validated_metrics(build_model(params.train, contract), x, y, params.train)
    model = fit(params.train, contract, x, y)
    metrics["train_rows"] = float(len(x))
    tracking.configure()
    tags = {"stage": "train", "model_family": "hist_gradient_boosting"}
    for key, value in (
        ("git_commit", tracking.git_commit()),
        ("dvc_data_md5", tracking.dvc_data_hash()),
    ):
        if value:
            tags[key] = value
    example = x.head(5)
    run = log_run(model, params, contract, metrics, example, reference[list(FEATURES)], tags)
    write_text(RUN_INFO, json.dumps(run | {"metrics": metrics}, indent=2))
    print(json.dumps(run | {"metrics": {k: round(v, 4) for k, v in metrics.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
