"""``params.yaml`` parsed into typed, validated models: the pipeline's only configuration."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field


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
