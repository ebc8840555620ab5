"""Reading the model registry for people: a client that fails fast, and the versions of a model
with their aliases and holdout metrics.

Used by ``carprice models``; the moves of ``production`` live in :mod:`pipelines.promotion`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines import tracking
from pipelines.params import load_environment


class RegistryError(Exception):
    """The registry cannot answer the request (the message says why, in one line)."""


@dataclass(frozen=True)
class VersionRow:
    """One registered version as ``carprice models list`` shows it."""

    version: str
    aliases: list[str]
    created: int
    """Creation time, ms since the epoch."""
    mae: str
    rmse: str
    r2: str
    decision: str
    experiment: str


def open_client() -> Any:
    """An MLflow client for the pipeline's registry, checked to answer.

    The HTTP timeout and retries are set first (MLflow's defaults retry for minutes), and a
    missing local SQLite store is reported rather than created.

    Raises:
        RegistryError: the registry is unreachable or does not exist.
    """
    load_environment().apply_mlflow_limits()
    from mlflow import MlflowClient

    uri = tracking.tracking_uri()
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.exists():
            raise RegistryError(f"no registry at {path}: run `dvc repro` first")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        client.search_registered_models(max_results=1)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RegistryError(f"registry {uri} is unreachable: {first[:200]}") from exc
    return client


def check_version(client: Any, name: str, version: str) -> str:
    """``version`` normalised (``v3`` -> ``3``), refusing one the model does not have."""
    from mlflow.exceptions import MlflowException

    number = version.removeprefix("v")
    if not number.isdigit():
        raise RegistryError(f"{version!r} is not a version number")
    try:
        client.get_model_version(name, number)
    except MlflowException:
        raise RegistryError(f"{name} has no version {number}") from None
    return number


def versions(client: Any, name: str) -> list[VersionRow]:
    """Every version of ``name``, newest first, with aliases and the holdout metrics tagged on
    it at registration (``-`` for versions registered before those tags existed)."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException:
        raise RegistryError(f"no registered model {name!r} yet: run `dvc repro` first") from None
    aliases: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    for mv in client.search_model_versions(f"name = '{name}'"):
        tags = mv.tags or {}
        rows.append(
            VersionRow(
                version=str(mv.version),
                aliases=sorted(aliases.get(str(mv.version), [])),
                created=int(mv.creation_timestamp or 0),
                mae=tags.get("holdout_mae", "-"),
                rmse=tags.get("holdout_rmse", "-"),
                r2=tags.get("holdout_r2", "-"),
                decision=tags.get("gate_decision", "-"),
                experiment=tags.get("dvc_exp_name", ""),
            )
        )
    return sorted(rows, key=lambda r: int(r.version), reverse=True)
