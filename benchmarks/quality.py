"""Model quality on the default data against the irreducible error and a linear baseline.

The generator knows each listing's noise-free price, so the irreducible error is the RMSE of
that price against the observed one on the same holdout the pipeline uses. Run:
``python benchmarks/quality.py`` (or ``make bench-quality``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.evaluate import linear_baseline_mae, regression_metrics
from pipelines.params import load_params
from pipelines.preprocess import clean, split
from pipelines.synthetic import generate
from pipelines.train import fit, split_xy
from pipelines.validate import contract_from


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    contract = contract_from(params)
    sample = generate(args.rows, args.seed)
    df = sample.listings.astype({"engine_cc": "float64", "seats": "float64"})
    cleaned, _ = clean(df, contract)
    train, test, _ = split(cleaned, params.preprocess)
    x, y = split_xy(train)
    started = time.perf_counter()
    model = fit(params.train, contract, x, y)
    fit_s = time.perf_counter() - started
    xt, yt = split_xy(test)
    observed = yt.to_numpy()
    predicted = model.predict(xt)
    m = regression_metrics(observed, predicted)
    clean_price = sample.clean_price[test.index.to_numpy()]
    irreducible = regression_metrics(observed, clean_price)
    baseline = linear_baseline_mae(train, xt, observed)
    result = {
        "rows": args.rows,
        "holdout_rows": len(test),
        "fit_seconds": round(fit_s, 2),
        "model_rmse": round(m["rmse"], 1),
        "irreducible_rmse": round(irreducible["rmse"], 1),
        "rmse_over_irreducible": round(m["rmse"] / irreducible["rmse"], 4),
        "model_mae": round(m["mae"], 1),
        "irreducible_mae": round(irreducible["mae"], 1),
        "linear_baseline_mae": round(baseline, 1),
        "mae_reduction_vs_linear": round(1 - m["mae"] / baseline, 4),
        "model_r2": round(m["r2"], 4),
    }
    print(json.dumps(result, indent=2))
    ok_rmse = result["rmse_over_irreducible"] <= 1.15
    ok_base = result["mae_reduction_vs_linear"] >= 0.30
    print(
        f"RMSE within 15% of irreducible: {'yes' if ok_rmse else 'NO'}; "
        f"MAE at least 30% below linear baseline: {'yes' if ok_base else 'NO'}"
    )
    sys.exit(0 if ok_rmse and ok_base else 1)


if __name__ == "__main__":
    main()
