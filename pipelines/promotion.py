"""The promotion gate and every move of the ``production`` alias.

A candidate passes the gate when there is no production model, or when its MAE on the current
holdout beats the production model's MAE on the same rows by ``min_improvement`` (a share).
On a plain ``dvc repro`` a candidate that passes becomes ``production``; one that does not gets
``challenger``. During a DVC experiment (``dvc exp run``) the verdict is recorded the same way
but the candidate only ever gets ``challenger``: exploring never changes what is served.
The decision and both scores are tags on the new version, with a fingerprint of the holdout
rows: when production was registered on the very rows the candidate is scored on (a DVC
experiment that changes only train params), its recorded MAE is that score and the gate uses
it instead of loading and re-scoring the production model. A failed gate is an outcome, not an
error.

``production`` moves only through :func:`move_production` (the gate, ``carprice models
promote``) and :func:`rollback`; each move is appended to the registered model's
``production_history`` tag, so a rollback knows where to go back to and the history stays.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

PRODUCTION = "production"
CHALLENGER = "challenger"
HISTORY_TAG = "production_history"
"""Registered-model tag: JSON list of the versions that were production, oldest first."""
HOLDOUT_TAG = "holdout_sha256"
"""Version tag: fingerprint of the holdout rows its ``holdout_mae`` tag was measured on."""


class PromotionError(Exception):
    """A promotion or rollback that cannot be done (the message says why, in one line)."""


@dataclass(frozen=True)
class Decision:
    """What the gate decided for one candidate and why."""

    model_name: str
    candidate_version: str
    candidate_mae: float
    production_version: str | None
    production_mae: float | None
    min_improvement: float
    passed: bool
    """The gate's verdict: the candidate is better than production (or there is none)."""
    promoted: bool
    """``production`` moved to the candidate (never during an experiment)."""
    alias: str
    reason: str
    experiment: str | None = None

    @property
    def outcome(self) -> str:
        """``promoted`` or ``challenger``: the tag value that says what happened."""
        return "promoted" if self.promoted else "challenger"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    candidate_mae: float, production_mae: float | None, min_improvement: float
) -> tuple[bool, str]:
    """The gate itself: better or not, and a sentence saying why.

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


def holdout_fingerprint(x: pd.DataFrame, y: pd.Series) -> str:
    """sha256 of the holdout's column names and values: equal rows, equal fingerprint."""
    digest = hashlib.sha256(json.dumps([*map(str, x.columns), str(y.name)]).encode())
    rows = pd.util.hash_pandas_object(x, index=False).to_numpy()
    digest.update(rows.tobytes())
    digest.update(pd.util.hash_pandas_object(y, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def holdout_mae(model_uri: str, x: pd.DataFrame, y: pd.Series) -> float:
    """MAE of the model at ``model_uri`` on ``x``/``y``."""
    import mlflow

    model = mlflow.pyfunc.load_model(model_uri)
    predicted = np.asarray(model.predict(x), dtype=float)
    return float(np.mean(np.abs(predicted - y.to_numpy())))


def current_production(client: Any, name: str) -> str | None:
    """The version that holds ``production``, None when no version does."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, PRODUCTION).version)
    except MlflowException:
        return None


def _production_mae(
    client: Any, name: str, x: pd.DataFrame, y: pd.Series, holdout: str
) -> tuple[str | None, float | None]:
    """Version and holdout MAE of the current production model, (None, None) if there is none.

    The MAE recorded at its registration is used when it was measured on the same rows
    (``holdout`` is :func:`holdout_fingerprint` of ``x``/``y``); otherwise the model is scored.
    """
    version = current_production(client, name)
    if version is None:
        return None, None
    tags = client.get_model_version(name, version).tags or {}
    recorded = _tag_float(tags, "holdout_mae")
    if recorded is not None and tags.get(HOLDOUT_TAG) == holdout:
        return version, recorded
    try:
        return version, holdout_mae(f"models:/{name}/{version}", x, y)
    except Exception as exc:  # a production model we cannot even score must not block a fix
        log.warning("production version %s cannot be scored (%s); treating as absent", version, exc)
        return version, None


def history(client: Any, name: str) -> list[str]:
    """Versions that were production, oldest first, ending with the current one.

    A move made outside this module (the MLflow UI) is not in the tag; the current holder is
    appended so the history always ends where production is.
    """
    tags = client.get_registered_model(name).tags or {}
    try:
        versions = [str(v) for v in json.loads(tags.get(HISTORY_TAG, "[]"))]
    except ValueError:
        versions = []
    current = current_production(client, name)
    if current is not None and (not versions or versions[-1] != current):
        versions.append(current)
    return versions


def move_production(client: Any, name: str, version: str, why: str) -> None:
    """Give ``version`` the ``production`` alias and record the move in the history."""
    past = history(client, name)
    client.set_registered_model_alias(name, PRODUCTION, version)
    if not past or past[-1] != version:
        past.append(version)
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(past))
    client.set_model_version_tag(name, version, "production_reason", why)


def rollback(client: Any, name: str) -> tuple[str, str]:
    """Move ``production`` back to the version that held it before the current one.

    The rolled-back version is tagged ``rolled_back``; the history drops it, so a second
    rollback goes one further back.

    Returns:
        ``(from_version, to_version)``.
    """
    past = history(client, name)
    if not past:
        raise PromotionError(f"{name} has no production version")
    if len(past) < 2:
        raise PromotionError(
            f"{name} v{past[-1]} is the only version that was ever production; "
            "nothing to roll back to"
        )
    current, previous = past[-1], past[-2]
    client.set_registered_model_alias(name, PRODUCTION, previous)
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(past[:-1]))
    client.set_model_version_tag(name, current, "rolled_back", "true")
    return current, previous


def register_and_gate(
    model_uri: str,
    run_id: str,
    name: str,
    candidate_metrics: dict[str, float],
    x: pd.DataFrame,
    y: pd.Series,
    min_improvement: float,
    tags: dict[str, str] | None = None,
    experiment: str | None = None,
    baseline_rev: str | None = None,
) -> Decision:
    """Register ``model_uri`` as a new version of ``name`` and apply the gate.

    ``candidate_metrics`` are the candidate's scores on ``x``/``y``. The production model's MAE
    on the same rows is its recorded one when it was registered on them, else it is scored
    before the new version is registered, so both scores come from the same rows. With
    ``experiment`` (the DVC experiment's name) the candidate gets ``challenger`` whatever the
    verdict.
    """
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    candidate_mae = candidate_metrics["mae"]
    holdout = holdout_fingerprint(x, y)
    prod_version, prod_mae = _production_mae(client, name, x, y, holdout)
    version_tags = {"run_id": run_id, **(tags or {})}
    if experiment:
        version_tags |= {"dvc_exp_name": experiment, "dvc_exp_baseline_rev": baseline_rev or ""}
    version = str(mlflow.register_model(model_uri, name, tags=version_tags).version)
    passed, reason = decide(candidate_mae, prod_mae, min_improvement)
    promoted = passed and not experiment
    if experiment:
        reason = (
            f"experiment {experiment}: {reason}; an experiment never moves production "
            f"(to serve it: carprice models promote {version})"
        )
    decision = Decision(
        model_name=name,
        candidate_version=version,
        candidate_mae=candidate_mae,
        production_version=prod_version,
        production_mae=prod_mae,
        min_improvement=min_improvement,
        passed=passed,
        promoted=promoted,
        alias=PRODUCTION if promoted else CHALLENGER,
        reason=reason,
        experiment=experiment,
    )
    for key, value in (
        *((f"holdout_{k}", f"{candidate_metrics[k]:.4f}") for k in ("mae", "rmse", "r2")),
        (HOLDOUT_TAG, holdout),
        ("production_mae_at_gate", "" if prod_mae is None else f"{prod_mae:.4f}"),
        ("production_version_at_gate", prod_version or ""),
        ("gate_passed", str(passed).lower()),
        ("gate_decision", decision.outcome),
        ("gate_reason", reason),
    ):
        client.set_model_version_tag(name, version, key, value)
    if promoted:
        move_production(client, name, version, f"promotion gate: {reason}")
    else:
        client.set_registered_model_alias(name, CHALLENGER, version)
    return decision


@dataclass(frozen=True)
class Comparison:
    """The gate's comparison of one version against the current production model."""

    version: str
    production_version: str | None
    candidate_mae: float | None
    production_mae: float | None
    passed: bool
    reason: str
    basis: str
    """Where the MAEs come from: the workspace holdout, or the tags recorded at registration."""


def compare(
    client: Any,
    name: str,
    version: str,
    min_improvement: float,
    holdout: tuple[pd.DataFrame, pd.Series] | None,
) -> Comparison:
    """Apply the gate to ``version`` against the current production model.

    With ``holdout`` both models are scored on those rows (as the gate does); without, the
    ``holdout_mae`` tags recorded when each was registered are compared.
    """
    prod = current_production(client, name)
    if prod == version:
        return Comparison(version, prod, None, None, False, f"v{version} is production", "")
    if holdout is not None:
        x, y = holdout
        cand_mae: float | None = holdout_mae(f"models:/{name}/{version}", x, y)
        prod_mae = None if prod is None else holdout_mae(f"models:/{name}/{prod}", x, y)
        basis = f"both scored on the workspace holdout ({len(x):,} rows)"
    else:
        cand_mae = _tag_float(client.get_model_version(name, version).tags, "holdout_mae")
        prod_mae = (
            None
            if prod is None
            else _tag_float(client.get_model_version(name, prod).tags, "holdout_mae")
        )
        basis = "holdout MAEs recorded at registration (no data/processed/test.parquet here)"
    if cand_mae is None:
        return Comparison(version, prod, None, prod_mae, False, "no holdout MAE to compare", basis)
    if prod is not None and prod_mae is None:
        return Comparison(
            version, prod, cand_mae, None, False, f"v{prod} has no holdout MAE to compare", basis
        )
    passed, reason = decide(cand_mae, prod_mae, min_improvement)
    return Comparison(version, prod, cand_mae, prod_mae, passed, reason, basis)


def _tag_float(tags: dict[str, str] | None, key: str) -> float | None:
    try:
        return float((tags or {})[key])
    except (KeyError, ValueError):
        return None
