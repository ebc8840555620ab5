"""The drift reference of a model version: the training sample logged with it, priced by it.

Training logs ``reference.parquet`` (a sample of the training features) beside the model in
MLflow. Drift compares the served traffic and the served prices with it, so the sample is
downloaded with the model and priced by that same model (exactly as the API prices cars).

Loading a model costs seconds (skops imports all of scikit-learn), so the first report of a
version stores the priced sample in the version's MLflow run (:data:`PRICED_FILE`), and every
later report, in any process, reads that one small file instead. The run's model and sample
never change; a change in how a sample is priced gets a new file name.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from serving.errors import ModelUnservable
from serving.inference.features import FEATURE_NAMES, make_row
from serving.inference.model import load_version
from serving.inference.registry import Registry, VersionInfo

log = logging.getLogger(__name__)

REFERENCE_FILE = "extra_files/reference.parquet"
"""Where training puts the sample, inside the model's artifacts."""
PRICED_FILE = "drift-reference/priced-v1.parquet"
"""Where the priced sample is kept, among the artifacts of the version's run."""
PRICE = "price"

_COLUMNS = [*FEATURE_NAMES, PRICE]


def load_reference(registry: Registry, info: VersionInfo) -> pd.DataFrame:
    """The reference sample of ``info``: the 16 features and ``price`` (the model's price).

    Blocking (may download and load the model): call it off any event loop.

    Raises:
        ModelUnservable: the version has no reference sample, or cannot be loaded.
        RegistryUnavailable: MLflow could not be read.
    """
    stored = _stored(registry, info)
    if stored is not None:
        return stored
    sample = price_reference(registry, info)
    _store(registry, info, sample)
    return sample


def price_reference(registry: Registry, info: VersionInfo) -> pd.DataFrame:
    """Download ``info``'s model and its reference sample and price the sample with it."""
    model = load_version(registry, info)
    tmp = Path(tempfile.mkdtemp(prefix="carprice-reference-"))
    try:
        path = registry.download(info.version, tmp) / REFERENCE_FILE
        if not path.is_file():
            raise ModelUnservable(
                f"{info.name}/{info.version} has no drift reference sample ({REFERENCE_FILE}): "
                "it was not trained by this project's pipeline"
            )
        sample = pd.read_parquet(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    missing = [name for name in FEATURE_NAMES if name not in sample.columns]
    if missing:
        raise ModelUnservable(
            f"{info.name}/{info.version}: the reference sample lacks {', '.join(missing)}"
        )
    sample = sample[list(FEATURE_NAMES)].reset_index(drop=True)
    records = sample.astype(object).where(sample.notna(), None).to_dict(orient="records")
    rows = [make_row({str(k): v for k, v in record.items()}) for record in records]
    prices = model.predict(rows) if rows else np.zeros(0)
    return sample.assign(**{PRICE: np.asarray(prices, dtype=np.float64)})


def _stored(registry: Registry, info: VersionInfo) -> pd.DataFrame | None:
    """The priced sample kept in ``info``'s run, or ``None`` (not kept yet, unreadable, or
    MLflow unreachable: then pricing it reports the outage)."""
    if info.run_id is None:
        return None
    import mlflow.artifacts

    tmp = Path(tempfile.mkdtemp(prefix="carprice-reference-"))
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=info.run_id,
            artifact_path=PRICED_FILE,
            dst_path=str(tmp),
            tracking_uri=registry.tracking_uri,
        )
        sample = pd.read_parquet(local)
    except Exception:  # not there yet (the usual case) or not readable: price it again
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if list(sample.columns) != _COLUMNS or len(sample) == 0:
        log.warning("%s/%s: ignoring a malformed %s", info.name, info.version, PRICED_FILE)
        return None
    return sample


def _store(registry: Registry, info: VersionInfo, sample: pd.DataFrame) -> None:
    """Keep the priced sample in ``info``'s run; a failure costs only the next report's time."""
    if info.run_id is None:
        return
    from mlflow import MlflowClient

    folder, name = PRICED_FILE.rsplit("/", 1)
    with tempfile.TemporaryDirectory(prefix="carprice-reference-") as tmp:
        path = Path(tmp) / name
        sample.to_parquet(path, index=False)
        try:
            client = MlflowClient(tracking_uri=registry.tracking_uri)
            client.log_artifact(info.run_id, str(path), artifact_path=folder)
        except Exception as exc:  # read-only MLflow, outage: the report goes on
            log.warning(
                "%s/%s: priced reference sample not kept in MLflow (%s: %s)",
                info.name,
                info.version,
                type(exc).__name__,
                str(exc).strip().splitlines()[0] if str(exc).strip() else "",
            )
