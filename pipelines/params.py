"""The pipeline's configuration: ``params.yaml`` parsed into typed, validated models, and the
few environment variables it reads (:class:`Environment`)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataParams(_Section):
    """Where the raw listings live."""

    raw: Path = Path("data/raw/cars.csv")


class ValidateParams(_Section):
    """Dataset-level limits of the data contract."""

    min_rows: int = Field(1000, ge=1)
    max_unknown_category_rate: float = Field(0.01, ge=0, le=1)


class PreprocessParams(_Section):
    """Train/test split and the drift reference sample."""

    test_size: float = Field(0.2, gt=0, lt=1)
    seed: int = 42
    reference_rows: int = Field(5000, ge=1)


class TrainParams(_Section):
    """Hyper-parameters of the gradient-boosted regressor and its cross-validation."""

    log_target: bool = True
    learning_rate: float = Field(0.1, gt=0, le=1)
    max_iter: int = Field(600, ge=1)
    max_leaf_nodes: int = Field(31, ge=2)
    min_samples_leaf: int = Field(20, ge=1)
    l2_regularization: float = Field(0.0, ge=0)
    early_stopping: bool = True
    cv_folds: int = Field(5, ge=0, description="0 or 1 skips cross-validation")
    seed: int = 42


class EvaluateParams(_Section):
    """Registry name and the promotion gate."""

    model_name: str = "car-price"
    min_improvement: float = Field(0.01, ge=0, lt=1)


class Params(_Section):
    """All of ``params.yaml``."""

    data: DataParams = DataParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    preprocess: PreprocessParams = PreprocessParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()


def load_params(path: Path = Path("params.yaml")) -> Params:
    """Read and validate ``params.yaml`` (a clear error names any bad key or value)."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return Params.model_validate(raw)


class Environment(BaseSettings):
    """The few environment variables the pipeline reads (this is the only place that reads any).

    ``MLFLOW_TRACKING_URI`` points runs and the registry at a tracking server; DVC sets
    ``DVC_EXP_NAME`` and ``DVC_EXP_BASELINE_REV`` while it runs an experiment (``dvc exp run``),
    and not on a plain ``dvc repro``. The two MLflow HTTP limits are MLflow's own variables: when
    unset, the pipeline gives them deliberate values (MLflow's defaults retry for minutes).
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    mlflow_tracking_uri: str | None = Field(None, alias="MLFLOW_TRACKING_URI")
    dvc_exp_name: str | None = Field(None, alias="DVC_EXP_NAME")
    dvc_exp_baseline_rev: str | None = Field(None, alias="DVC_EXP_BASELINE_REV")
    mlflow_http_request_timeout: int = Field(
        10, ge=1, alias="MLFLOW_HTTP_REQUEST_TIMEOUT", description="seconds per HTTP request"
    )
    mlflow_http_request_max_retries: int = Field(
        1, ge=0, alias="MLFLOW_HTTP_REQUEST_MAX_RETRIES", description="retries of a failed request"
    )

    @property
    def experiment(self) -> str | None:
        """The DVC experiment being run, None on a plain ``dvc repro``."""
        return self.dvc_exp_name or None

    def apply_mlflow_limits(self) -> None:
        """Hand the HTTP limits to MLflow (which reads them from the environment)."""
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(self.mlflow_http_request_timeout)
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(self.mlflow_http_request_max_retries)


def load_environment() -> Environment:
    """The environment as the pipeline sees it, read now (not cached: tests change it)."""
    return Environment()
