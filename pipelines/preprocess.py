"""Stage ``preprocess``: clean the validated listings, split them, draw the drift reference.

Cleaning, each step counted in ``reports/preprocess.json``:

* exact duplicate listings are dropped (a re-posted ad would leak between train and test);
* rows with a value outside the contract's range are dropped (validation lets a small share
  through only for missing values, so this is a safety net, not a filter that hides bad data);
* categories outside the contract become missing: the model treats them as unknown, as serving
  does for a new brand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.atomic import atomic_path, write_text
from pipelines.contract import DataContract, build_contract
from pipelines.params import Params, PreprocessParams, load_params
from pipelines.process import finish
from pipelines.progress import Progress

PROCESSED = Path("data/processed")
REPORT = Path("reports/preprocess.json")


def read_listings(path: Path, contract: DataContract) -> pd.DataFrame:
    """Read listings with contract types: text for categories, float64 for numbers."""
    dtypes = {
        c.name: ("object" if c.kind == "categorical" else "float64") for c in contract.columns
    }
    df = pd.read_csv(path, dtype=dtypes, usecols=list(dtypes))
    return df[[c.name for c in contract.columns]]


def clean(df: pd.DataFrame, contract: DataContract) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop duplicates and out-of-range rows, blank unknown categories.

    Args:
        df: typed listings (see :func:`read_listings`).
        contract: the data contract.

    Returns:
        The cleaned listings (original index kept) and how many rows/cells each step touched.
    """
    counts: dict[str, int] = {"rows_in": len(df)}
    out = df.drop_duplicates()
    counts["duplicates_dropped"] = len(df) - len(out)
    bad = np.zeros(len(out), dtype=bool)
    for spec in contract.columns:
        if spec.kind == "categorical":
            continue
        col = out[spec.name].astype("float64")
        if not spec.nullable:
            bad |= col.isna().to_numpy()
        lo = -np.inf if spec.min is None else spec.min
        hi = np.inf if spec.max is None else spec.max
        below = col <= lo if spec.strict_min else col < lo
        bad |= (below | (col > hi)).to_numpy()
    counts["out_of_range_dropped"] = int(bad.sum())
    out = out.loc[~bad].copy()
    unknown = 0
    for spec in contract.columns:
        if spec.categories is None:
            continue
        mask = out[spec.name].notna() & ~out[spec.name].isin(spec.categories)
        unknown += int(mask.sum())
        out.loc[mask, spec.name] = np.nan
    counts["unknown_categories_blanked"] = unknown
    counts["rows_out"] = len(out)
    return out, counts


def split(
    df: pd.DataFrame, params: PreprocessParams
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Seeded train/test split and the drift reference sample (drawn from train).

    The rows are split as scikit-learn's ``train_test_split(df, test_size=..., random_state=
    seed)`` splits them (the same permutation of a ``RandomState(seed)``, the first
    ``ceil(test_size * n)`` rows of it for test), without importing scikit-learn (~1 s).

    Returns:
        ``(train, test, reference)``.
    """
    order = np.random.RandomState(params.seed).permutation(len(df))
    n_test = math.ceil(params.test_size * len(df))
    train, test = df.iloc[order[n_test:]], df.iloc[order[:n_test]]
    n_ref = min(params.reference_rows, len(train))
    reference = train.sample(n=n_ref, random_state=params.seed)
    return train, test, reference


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def run(params: Params, out_dir: Path = PROCESSED, report: Path = REPORT) -> dict[str, int]:
    """Read ``params.data.raw``, clean, split and write the Parquet outputs and the report."""
    contract = build_contract(params.validate_.min_rows, params.validate_.max_unknown_category_rate)
    cleaned, counts = clean(read_listings(params.data.raw, contract), contract)
    train, test, reference = split(cleaned, params.preprocess)
    for name, frame in (("train", train), ("test", test), ("reference", reference)):
        _write_parquet(frame, out_dir / f"{name}.parquet")
    counts |= {"train_rows": len(train), "test_rows": len(test), "reference_rows": len(reference)}
    write_text(report, json.dumps(counts, indent=2))
    return counts


def main() -> int:
    """DVC entry point."""
    progress = Progress("preprocess")
    with progress.step("clean, split and write data/processed/{train,test,reference}.parquet"):
        counts = run(load_params())
    progress.say(json.dumps(counts))
    progress.done()
    return 0


if __name__ == "__main__":
    finish(main())
