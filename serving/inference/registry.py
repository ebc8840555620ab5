"""The MLflow model registry as serving sees it: resolve an alias, list and download versions.

Every method blocks (MLflow's client is synchronous): callers run them in a worker thread.
Failures come out as domain errors: an unknown model, alias or version is ``None`` (or an empty
list), anything else (server down, timeout, broken store) is :class:`RegistryUnavailable`.

Waiting is bounded: against a tracking server MLflow's HTTP client is told to time out after
``registry_timeout`` seconds and not to retry (its defaults retry for minutes), and a SQLite
URI whose file does not exist is refused instead of silently creating an empty registry.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.errors import RegistryUnavailable

_REMOTE_SCHEMES = ("http://", "https://", "databricks")


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One registered version: what the registry says about it."""

    name: str
    version: str
    aliases: tuple[str, ...]
    status: str
    run_id: str | None
    source: str
    created_at_ms: int | None
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


class Registry:
    """Read access to one registered model in one MLflow registry."""

    def __init__(self, tracking_uri: str, model_name: str, timeout: float) -> None:
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self._client: Any = None
        if tracking_uri.startswith(_REMOTE_SCHEMES):
            # MLflow reads these at each request; its defaults (120 s, 7 retries with backoff)
            # would hold a request or the poller for minutes. A user's explicit value wins.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, math.ceil(timeout))))
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        # A tqdm bar per download is noise in a server's log.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    def _mlflow(self) -> Any:
        if self._client is None:
            path = _sqlite_path(self.tracking_uri)
            if path is not None and not path.exists():
                raise RegistryUnavailable(
                    f"no MLflow registry at {self.tracking_uri} (file not found): run the "
                    "pipeline or set MLFLOW_TRACKING_URI"
                )
            from mlflow import MlflowClient

            self._client = MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
            )
        return self._client

    def _info(
        self, mv: Any, metrics: dict[str, float] | None = None, aliases: list[str] | None = None
    ) -> VersionInfo:
        return VersionInfo(
            name=str(mv.name),
            version=str(mv.version),
            aliases=tuple(sorted(aliases if aliases is not None else (mv.aliases or ()))),
            status=str(mv.status),
            run_id=mv.run_id or None,
            source=str(mv.source),
            created_at_ms=int(mv.creation_timestamp) if mv.creation_timestamp else None,
            tags=dict(mv.tags or {}),
            metrics=metrics or {},
        )

    def _guard(self, what: str, call: Any) -> Any:
        """Run ``call()``; not-found becomes None, other failures RegistryUnavailable."""
        from mlflow.exceptions import MlflowException

        try:
            return call()
        except RegistryUnavailable:
            raise
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise RegistryUnavailable(f"registry error while {what}: {exc.message}") from exc
        except Exception as exc:  # network, database, timeouts: all mean "not now"
            raise RegistryUnavailable(
                f"registry unreachable while {what}: {type(exc).__name__}: {exc}"
            ) from exc

    def version_for_alias(self, alias: str) -> VersionInfo | None:
        """The version that ``alias`` points to, None if the model or alias does not exist."""
        # Through the registered model: a missing alias is an error code that differs between
        # stores, a missing model is RESOURCE_DOES_NOT_EXIST everywhere.
        model = self._guard(
            f"reading {self.model_name}",
            lambda: self._mlflow().get_registered_model(self.model_name),
        )
        if model is None or alias not in model.aliases:
            return None
        return self.get_version(str(model.aliases[alias]))

    def get_version(self, version: str) -> VersionInfo | None:
        """Version ``version`` of the model, None if it is not registered."""
        mv = self._guard(
            f"looking up {self.model_name}/{version}",
            lambda: self._mlflow().get_model_version(self.model_name, version),
        )
        return None if mv is None else self._info(mv)

    def list_versions(self) -> list[VersionInfo]:
        """Every registered version, newest first, with the metrics of the run behind each."""
        escaped = self.model_name.replace("'", "\\'")

        def fetch() -> list[VersionInfo]:
            client = self._mlflow()
            # Searched versions come without their aliases: take them from the model.
            aliases: dict[str, list[str]] = {}
            for alias, version in client.get_registered_model(self.model_name).aliases.items():
                aliases.setdefault(str(version), []).append(alias)
            out = []
            for mv in client.search_model_versions(f"name='{escaped}'"):
                metrics: dict[str, float] = {}
                if mv.run_id:
                    run = self._guard("reading a run", lambda r=mv.run_id: client.get_run(r))
                    if run is not None:
                        metrics = {k: float(v) for k, v in sorted(run.data.metrics.items())}
                out.append(self._info(mv, metrics, aliases.get(str(mv.version), [])))
            return sorted(out, key=lambda v: int(v.version), reverse=True)

        found = self._guard(f"listing versions of {self.model_name}", fetch)
        return found or []

    def download(self, version: str, dst: Path) -> Path:
        """Download the model artifacts of ``version`` into ``dst``; returns the model dir."""

        def fetch() -> Path:
            import mlflow.artifacts

            uri = self._mlflow().get_model_version_download_uri(self.model_name, version)
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=str(dst), tracking_uri=self.tracking_uri
            )
            return Path(local)

        path = self._guard(f"downloading {self.model_name}/{version}", fetch)
        if path is None:
            raise RegistryUnavailable(f"{self.model_name}/{version} has no artifacts")
        return Path(path)
