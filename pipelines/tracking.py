"""MLflow tracking for the pipeline: where runs go, and the provenance tags they carry.

The embedded default is SQLite at ``mlruns/mlflow.db`` with artifacts under ``mlruns/artifacts``;
``MLFLOW_TRACKING_URI`` points everything at a tracking server instead. This module is the one
place that reads it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
ARTIFACT_ROOT = Path("mlruns/artifacts")
EXPERIMENT = "car-price"


def tracking_uri() -> str:
    """The tracking URI: ``MLFLOW_TRACKING_URI`` or the embedded SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def configure(experiment: str = EXPERIMENT) -> str:
    """Point MLflow at the tracking store and select (creating if needed) the experiment.

    Returns:
        The experiment id.
    """
    import mlflow

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


def git_commit() -> str | None:
    """The current git commit, with ``-dirty`` if the work tree has changes; None outside git."""
    git = shutil.which("git")
    if git is None:
        return None
    try:
        sha = subprocess.run(
            [git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            [git, "status", "--porcelain", "--untracked-files=no"],
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
