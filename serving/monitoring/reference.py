"""The drift reference of a model version: the training sample logged with it, priced by it.

Training logs ``reference.parquet`` (a sample of the training features) beside the model in
MLflow. Drift compares the served traffic and the served prices with it, so the sample is
downloaded with the model and priced by that same model (the compiled fast path, exactly as the
API prices cars).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from serving.errors import ModelUnservable
from serving.inference.features import FEATURE_NAMES, make_row
from serving.inference.model import load_version
from serving.inference.registry import Registry, VersionInfo

REFERENCE_FILE = "extra_files/reference.parquet"
"""Where training puts the sample, inside the model's artifacts."""


def load_reference(registry: Registry, info: VersionInfo) -> pd.DataFrame:
    """The reference sample of ``info``: the 16 features and ``price`` (the model's price).

    Blocking (downloads and loads the model): call it off any event loop.

    Raises:
        ModelUnservable: the version has no reference sample, or cannot be loaded.
        RegistryUnavailable: MLflow could not be read.
    """
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
    return sample.assign(price=np.asarray(prices, dtype=np.float64))
