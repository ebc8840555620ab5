"""One drift report from the stores: a window of the prediction log against a model version's
reference sample in MLflow. Shared by ``carprice drift report`` and ``carprice monitor``.

The model version is the one asked for, else the one the production alias points to; the
window is the newest ``drift_window_rows`` cars served by that version unless a range is given.
A window with fewer than ``drift_min_rows`` cars gives no report (:class:`TooFewRows`).
References are kept per version, so a monitor downloads and prices each once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import pandas as pd
from sqlalchemy import Engine

from serving.errors import ModelNotFound, ModelNotReady, ServingError
from serving.inference.registry import Registry, VersionInfo
from serving.monitoring.reference import load_reference
from serving.store import predictions
from serving.store.predictions import Window

if TYPE_CHECKING:
    from serving.monitoring.drift import DriftReport

log = logging.getLogger(__name__)


class TooFewRows(ServingError):  # noqa: N818 - named for what happened
    """The window holds too few logged cars for a meaningful report."""

    code = "too_few_rows"


@dataclass
class DriftJob:
    """Computes reports for one registered model; remembers the references it loaded."""

    registry: Registry
    log_engine: Engine
    alias: str = "production"
    window_rows: int = 5_000
    min_rows: int = 500
    drift_share: float = 0.5
    _references: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    def version(self, version: str | None = None) -> VersionInfo:
        """``version``'s registry entry, or the alias's when ``None``.

        Raises:
            ModelNotFound: no such version. ModelNotReady: no version has the alias.
            RegistryUnavailable: MLflow could not be read.
        """
        name = self.registry.model_name
        if version is not None:
            info = self.registry.get_version(version)
            if info is None:
                raise ModelNotFound(f"{name} has no version {version!r}")
            return info
        info = self.registry.version_for_alias(self.alias)
        if info is None:
            raise ModelNotReady(f"no version of {name} has the alias {self.alias!r}")
        return info

    def reference(self, info: VersionInfo) -> pd.DataFrame:
        """The priced reference sample of ``info`` (downloaded once per version)."""
        if info.version not in self._references:
            self._references = {info.version: load_reference(self.registry, info)}
        return self._references[info.version]

    def run(self, which: Window | None = None, version: str | None = None) -> DriftReport:
        """Compute the report of ``which`` (default: the newest ``window_rows`` cars) for
        ``version`` (default: the alias's).

        Raises:
            TooFewRows: fewer than ``min_rows`` cars in the window.
            ModelNotFound, ModelNotReady, ModelUnservable, RegistryUnavailable: see above.
            sqlalchemy.exc.SQLAlchemyError: the log's database could not be read.
        """
        info = self.version(version)
        which = replace(which or Window(last=self.window_rows), model_version=info.version)
        current = predictions.drift_window(self.log_engine, which)
        if len(current) < self.min_rows:
            raise TooFewRows(
                f"only {len(current)} logged car{'s' if len(current) != 1 else ''} of "
                f"{info.name}/{info.version} in the window; a report needs at least "
                f"{self.min_rows} (CARPRICE_DRIFT_MIN_ROWS): send traffic or widen the window"
            )
        reference = self.reference(info)
        from serving.monitoring import drift  # Evidently: seconds to import, only here

        span = None
        if which.since is not None or which.until is not None:
            span = (
                which.since or current["logged_at"].min(),
                which.until or current["logged_at"].max(),
            )
        report = drift.compute(
            current,
            reference,
            model_name=info.name,
            model_version=info.version,
            window=span,
            drift_share=self.drift_share,
        )
        log.info(
            "drift report for %s/%s: %d cars, drift share %.3f",
            info.name,
            info.version,
            len(current),
            report.summary["drift_share"],
        )
        return report
