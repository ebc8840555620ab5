"""MLflow tracking for the pipeline: where runs go and the provenance tags they carry.

The embedded default is SQLite at ``mlruns/mlflow.db`` with artifacts under ``mlruns/artifacts``;
``MLFLOW_TRACKING_URI`` (read in :mod:`pipelines.params`) points everything at a tracking server.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from pipelines.params import load_environment

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
ARTIFACT_ROOT = Path("mlruns/artifacts")
EXPERIMENT = "car-price"
FINGERPRINT_TAG = "model_fingerprint"
"""Run tag holding the sha256 of the fitted model (``models/train.json`` records the same)."""


def tracking_uri() -> str:
    """The tracking URI: ``MLFLOW_TRACKING_URI`` or the embedded SQLite store."""
    return load_environment().mlflow_tracking_uri or DEFAULT_TRACKING_URI


def configure(experiment: str = EXPERIMENT) -> str:
    """Point MLflow at the tracking store and select (creating if needed) the experiment.

    Returns:
        The experiment id.
    """
    import mlflow

    load_environment().apply_mlflow_limits()
    uri = tracking_uri()
    if uri == DEFAULT_TRACKING_URI:
        ARTIFACT_ROOT.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        exp_id = found.experiment_id
    else:
        location = ARTIFACT_ROOT.resolve().as_uri() if uri == DEFAULT_TRACKING_URI else None
        exp_id = mlflow.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment_id=exp_id)
    return str(exp_id)


def pipeline_outputs(dvc_yaml: Path = Path("dvc.yaml")) -> list[str]:
    """Every path DVC writes: ``dvc.lock`` and each stage's outs, metrics and plots."""
    if not dvc_yaml.exists():
        return []
    stages = (yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}).get("stages", {})
    paths = ["dvc.lock"]
    for stage in stages.values():
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key) or []:
                paths.append(next(iter(entry)) if isinstance(entry, dict) else str(entry))
    return paths


def git_commit() -> str | None:
    """The current git commit, with ``-dirty`` when code, params or data differ from it.

    The files DVC itself rewrites while a pipeline runs (``dvc.lock`` and the stage outputs
    committed to git) are left out of the check: during ``dvc repro`` they change before the
    later stages read this, and they are results, not inputs. None outside git.
    """
    git = shutil.which("git")
    if git is None:
        return None
    excludes = [f":(exclude){p}" for p in pipeline_outputs()]
    try:
        sha = subprocess.run(
            [git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            [git, "status", "--porcelain", "--untracked-files=no", "--", ".", *excludes],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def dvc_data_hash(dvc_file: Path = Path("data.dvc")) -> str | None:
    """The md5 DVC recorded for the raw data, or None when it is not tracked."""
    if not dvc_file.exists():
        return None
    meta = yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}
    outs = meta.get("outs") or [{}]
    value = outs[0].get("md5")
    return str(value) if value else None
