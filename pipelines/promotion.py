"""The promotion gate: register the candidate and move ``production`` only when it is better.

A candidate becomes ``production`` when there is none, or when its MAE on the current holdout
beats the production model's MAE on the same rows by ``min_improvement`` (a share). Otherwise
it gets the ``challenger`` alias. The decision and both scores are recorded as tags on the new
version. A failed gate is an outcome, not an error.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

PRODUCTION = "production"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class Decision:
    """What the gate decided for one candidate and why."""

    model_name: str
    candidate_version: str
    candidate_mae: float
    production_version: str | None
    production_mae: float | None
    min_improvement: float
    promoted: bool
    alias: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    candidate_mae: float, production_mae: float | None, min_improvement: float
) -> tuple[bool, str]:
    """The gate itself: promote or not, and a sentence saying why.

    Args:
        candidate_mae: MAE of the candidate on the holdout.
        production_mae: MAE of the production model on the same holdout; None if there is none.
        min_improvement: share by which the candidate must beat production (0.01 = 1 %).
    """
    if production_mae is None:
        return True, "no production model yet"
    threshold = production_mae * (1.0 - min_improvement)
    if candidate_mae < threshold:
        return True, (
            f"candidate MAE {candidate_mae:.2f} beats production MAE {production_mae:.2f} "
            f"by more than {min_improvement:.1%} (threshold {threshold:.2f})"
        )
    return False, (
        f"candidate MAE {candidate_mae:.2f} does not beat production MAE {production_mae:.2f} "
        f"by {min_improvement:.1%} (needed below {threshold:.2f})"
    )


def _production_mae(
    client: Any, name: str, x: pd.DataFrame, y: pd.Series
) -> tuple[str | None, float | None]:
    """Version and holdout MAE of the current production model, (None, None) if there is none."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        current = client.get_model_version_by_alias(name, PRODUCTION)
    except MlflowException:
        return None, None
    try:
        model = mlflow.pyfunc.load_model(f"models:/{name}/{current.version}")
        predicted = np.asarray(model.predict(x), dtype=float)
    except Exception as exc:  # a production model we cannot even score must not block a fix
        log.warning(
            "production version %s cannot be scored (%s); treating as absent", current.version, exc
        )
        return str(current.version), None
    return str(current.version), float(np.mean(np.abs(predicted - y.to_numpy())))


def register_and_gate(
    model_uri: str,
    run_id: str,
    name: str,
    candidate_mae: float,
    x: pd.DataFrame,
    y: pd.Series,
    min_improvement: float,
    tags: dict[str, str] | None = None,
) -> Decision:
    """Register ``model_uri`` as a new version of ``name`` and apply the gate.

    The production model is scored on ``x``/``y`` (the candidate's holdout) before the new
    version is registered, so both scores come from the same rows.
    """
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    prod_version, prod_mae = _production_mae(client, name, x, y)
    version = mlflow.register_model(model_uri, name, tags={"run_id": run_id, **(tags or {})})
    promoted, reason = decide(candidate_mae, prod_mae, min_improvement)
    alias = PRODUCTION if promoted else CHALLENGER
    decision = Decision(
        model_name=name,
        candidate_version=str(version.version),
        candidate_mae=candidate_mae,
        production_version=prod_version,
        production_mae=prod_mae,
        min_improvement=min_improvement,
        promoted=promoted,
        alias=alias,
        reason=reason,
    )
    for key, value in (
        ("holdout_mae", f"{candidate_mae:.4f}"),
        ("production_mae_at_gate", "" if prod_mae is None else f"{prod_mae:.4f}"),
        ("production_version_at_gate", prod_version or ""),
        ("gate_decision", "promoted" if promoted else "challenger"),
        ("gate_reason", reason),
    ):
        client.set_model_version_tag(name, str(version.version), key, value)
    client.set_registered_model_alias(name, alias, str(version.version))
    return decision
