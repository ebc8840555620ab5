"""Stage ``evaluate``: score the trained model on the holdout, log it to MLflow, run the gate.

Reads the model ``train`` pickled (``models/model.pkl``, checked against the fingerprint in
``models/train.json``), writes DVC metrics (``reports/metrics.json``), per-segment errors
(``reports/segments.json``), plot data (``reports/predictions.csv``) and images
(``reports/plots/*.png``), then logs one MLflow run: the params, the CV and holdout metrics,
the model with its signature, data contract and drift reference sample, and these reports.
It registers the model and applies :mod:`pipelines.promotion` (``reports/promotion.json``).
MLflow is imported only here, after the scoring. During a DVC experiment the gate's verdict is
recorded but ``production`` never moves. The metrics and plots are committed with git (DVC's
convention, so ``dvc exp show`` and ``dvc metrics diff`` compare revisions); ``promotion.json``
depends on the registry and is not tracked.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from pipelines.atomic import atomic_path, write_text
from pipelines.contract import CATEGORICAL, FEATURES, NUMERICAL
from pipelines.params import load_environment, load_params
from pipelines.preprocess import PROCESSED
from pipelines.process import finish
from pipelines.progress import Progress
from pipelines.threads import limit_openmp
from pipelines.train import (
    MODEL_FILE,
    RUN_INFO,
    ModelFileError,
    load_model,
    log_run,
    pip_requirements,
    split_xy,
)
from pipelines.validate import contract_from

REPORTS = Path("reports")
PLOTS = REPORTS / "plots"
PROMOTION = REPORTS / "promotion.json"
REGISTERED = Path("models/registered.json")
PLOT_ROWS = 5_000
AGE_BINS = [-1, 2, 5, 9, 14, 100]
AGE_LABELS = ["0-2", "3-5", "6-9", "10-14", "15+"]
REFERENCE_YEAR = 2026


def regression_metrics(y: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """RMSE, MAE, MAPE (%) and R² of ``predicted`` against ``y``."""
    err = predicted - y
    ss_res = float(np.sum(err**2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "mape": float(np.mean(np.abs(err) / np.abs(y)) * 100),
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0,
    }


def segment_errors(x: pd.DataFrame, y: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """Errors per brand, per age band and per fuel type: where the model is weak."""
    frame = pd.DataFrame({"y": y, "p": predicted}, index=x.index)
    frame["brand"] = x["brand"].fillna("(missing)")
    frame["fuel_type"] = x["fuel_type"].fillna("(missing)")
    frame["age"] = pd.cut(REFERENCE_YEAR - x["year"], AGE_BINS, labels=AGE_LABELS).astype(str)
    out: dict[str, Any] = {}
    for key in ("brand", "age", "fuel_type"):
        rows = {}
        for value, g in frame.groupby(key, observed=True):
            m = regression_metrics(g["y"].to_numpy(), g["p"].to_numpy())
            rows[str(value)] = {"rows": len(g), **{k: round(v, 4) for k, v in m.items()}}
        out[f"by_{key}"] = rows
    return out


def linear_baseline_mae(train: pd.DataFrame, x_test: pd.DataFrame, y_test: np.ndarray) -> float:
    """Holdout MAE of a least-squares linear regression (imputed, one-hot categories, scaled
    numbers) trained on the same split.

    The one-hot matrix is sparse, and scikit-learn solves a sparse least-squares problem
    iteratively (LSQR). On the raw numbers (kilometres in the 100,000s beside 0/1 columns) and
    its default tolerance it stopped far from the solution, at an MAE 22 % too high that also
    changed with the CPU and its BLAS threads; scaled, and with a tight tolerance, it reaches
    the least-squares fit (the dense solver's, to 1e-12) the same way everywhere.
    """
    columns = ColumnTransformer(
        [
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="(missing)"),
                    OneHotEncoder(handle_unknown="ignore"),
                ),
                list(CATEGORICAL),
            ),
            (
                "num",
                make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                list(NUMERICAL),
            ),
        ]
    )
    x_train, y_train = split_xy(train)
    model = make_pipeline(columns, LinearRegression(tol=1e-12)).fit(x_train, y_train)
    return float(np.mean(np.abs(model.predict(x_test) - y_test)))


def feature_importance(model: Any, x: pd.DataFrame, y: np.ndarray, seed: int) -> pd.Series:
    """Permutation importance (increase in MAE) of each feature on up to 2,000 holdout rows.

    Each feature is shuffled 3 times; all the shuffled copies are scored in one ``predict``
    call (the booster walks its trees once for all of them, not 48 times for small batches).
    The sample is encoded once and its encoded columns are shuffled: the encoding maps each
    cell on its own, so this equals shuffling the raw column, without encoding 98,000 rows.
    """
    repeats = 3
    n = min(2_000, len(x))
    sample = x.sample(n=n, random_state=seed)
    target = y[x.index.get_indexer(sample.index)]
    rng = np.random.default_rng(seed)
    columns, regressor = model[:-1], model[-1]
    encoded = np.asarray(columns.transform(sample))
    position = {str(name): i for i, name in enumerate(columns.get_feature_names_out())}
    copies = [encoded]
    for column in FEATURES:
        j = position[column]
        for _ in range(repeats):
            shuffled = encoded.copy()
            shuffled[:, j] = encoded[rng.permutation(n), j]
            copies.append(shuffled)
    predicted = np.asarray(regressor.predict(np.concatenate(copies)))
    errors = np.abs(predicted.reshape(-1, n) - target).mean(axis=1)
    increase = errors[1:].reshape(len(FEATURES), repeats).mean(axis=1) - errors[0]
    return pd.Series(increase, index=list(FEATURES)).sort_values()


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.backends.backend_agg
    import matplotlib.pyplot as plt

    return plt


def plot_all(y: np.ndarray, predicted: np.ndarray, importance: pd.Series, out_dir: Path) -> None:
    """Predicted vs actual, residuals, and feature importance as PNGs in ``out_dir``."""
    plt = _pyplot()
    rng = np.random.default_rng(0)
    idx = rng.choice(len(y), size=min(PLOT_ROWS, len(y)), replace=False)
    ys, ps = y[idx], predicted[idx]

    # Fixed margins instead of tight_layout(), which draws each figure once more to measure it.
    fig, ax = plt.subplots(figsize=(6, 6))
    fig.subplots_adjust(left=0.14, right=0.96, bottom=0.1, top=0.94)
    ax.scatter(ys, ps, s=4, alpha=0.3)
    top = float(max(ys.max(), ps.max()))
    ax.plot([0, top], [0, top], color="black", linewidth=1, label="perfect")
    ax.set(xlabel="actual price (EUR)", ylabel="predicted price (EUR)", title="Predicted vs actual")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.legend()
    fig.savefig(out_dir / "predicted_vs_actual.png", dpi=100)
    plt.close(fig)

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.92, wspace=0.22)
    rel = (ps - ys) / ys * 100
    left.scatter(ys, rel, s=4, alpha=0.3)
    left.axhline(0, color="black", linewidth=1)
    left.set(xscale="log", xlabel="actual price (EUR)", ylabel="error (%)", title="Residuals")
    right.hist(np.clip(rel, -100, 100), bins=80)
    right.set(xlabel="error (%)", ylabel="listings", title="Error distribution")
    fig.savefig(out_dir / "residuals.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 6))
    fig.subplots_adjust(left=0.24, right=0.96, bottom=0.1, top=0.94)
    ax.barh(importance.index, importance.to_numpy())
    ax.set(xlabel="increase in MAE when shuffled (EUR)", title="Permutation feature importance")
    fig.savefig(out_dir / "feature_importance.png", dpi=100)
    plt.close(fig)


def _import_mlflow() -> None:
    """Import what logging the run needs: skops (the model's serialisation format), MLflow, its
    scikit-learn and pyfunc flavours and its SQL store; and map the installed packages.

    skops comes first: at import it looks up every NumPy and SciPy ufunc in each loaded module,
    and MLflow loads 1,200 more. In this order the imports take 6.1 s here, in the other 8.1 s.
    ``log_model`` checks the pinned requirements against what is installed; the first check
    maps every installed distribution to its modules (~0.5 s), which is done here too (the same
    call, with the same requirements: it warns only if one is not installed).
    """
    import skops.io  # noqa: F401, I001

    import mlflow.pyfunc
    import mlflow.sklearn
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    from mlflow.utils.requirements_utils import warn_dependency_requirement_mismatches

    warn_dependency_requirement_mismatches(pip_requirements())


def main() -> int:
    """DVC entry point: evaluate, log the run with the model, register and gate."""
    progress = Progress("evaluate")
    params = load_params()
    environment = load_environment()
    contract = contract_from(params)
    trained = json.loads(RUN_INFO.read_text(encoding="utf-8"))
    with progress.step(f"load {MODEL_FILE}"):
        try:
            model = load_model(trained["fingerprint"])
        except ModelFileError as exc:
            print(f"evaluate: {exc}", file=sys.stderr)
            return 1

    with progress.step("read data/processed/{train,test}.parquet"):
        train = pd.read_parquet(PROCESSED / "train.parquet")
        test = pd.read_parquet(PROCESSED / "test.parquet")
    # skops, MLflow and its SQL store take ~6 CPU-s to import. The scoring below spends most of
    # its time in the booster's predict, which releases the GIL: the import runs beside it (a
    # failed import fails again, with its message, where MLflow is first used below).
    # What this thread goes on to import (pyplot with its backend) is imported first, so the
    # two threads never import modules at the same time.
    _pyplot()
    importer = threading.Thread(target=_import_mlflow, name="import-mlflow", daemon=True)
    importer.start()
    with progress.step("score the holdout and a linear baseline"):
        x, y_series = split_xy(test)
        y = y_series.to_numpy(dtype=float)
        limit_openmp(len(x))  # for every prediction below, the gate's included
        predicted = np.asarray(model.predict(x), dtype=float)
        metrics = regression_metrics(y, predicted)
        metrics["baseline_linear_mae"] = linear_baseline_mae(train, x, y)
        metrics["mae_vs_baseline"] = metrics["mae"] / metrics["baseline_linear_mae"]
        metrics["test_rows"] = float(len(y))
        segments = segment_errors(x, y, predicted)
    with progress.step("permutation feature importance"):
        importance = feature_importance(model, x, y, params.preprocess.seed)

    with progress.step("plots and reports"):
        with atomic_path(PLOTS) as tmp_plots:
            tmp_plots.mkdir()
            plot_all(y, predicted, importance, tmp_plots)
        rng = np.random.default_rng(0)
        idx = np.sort(rng.choice(len(y), size=min(PLOT_ROWS, len(y)), replace=False))
        plot_data = pd.DataFrame({"actual": y[idx], "predicted": predicted[idx].round(2)})
        plot_data["residual"] = (plot_data["predicted"] - plot_data["actual"]).round(2)
        with atomic_path(REPORTS / "predictions.csv") as tmp:
            plot_data.to_csv(tmp, index=False)
        write_text(
            REPORTS / "metrics.json",
            json.dumps({k: round(v, 4) for k, v in metrics.items()}, indent=2),
        )
        write_text(REPORTS / "segments.json", json.dumps(segments, indent=2))
        write_text(
            REPORTS / "feature_importance.json",
            json.dumps(
                {k: round(float(v), 4) for k, v in importance.sort_values(ascending=False).items()},
                indent=2,
            ),
        )

    with progress.step("import MLflow (the rest of it)"):
        importer.join()
        import mlflow

        from pipelines import tracking
        from pipelines.promotion import register_and_gate
    git_commit = tracking.git_commit()
    with progress.step(
        f"log the run, the model and the reports to MLflow ({tracking.tracking_uri()})"
    ):
        tracking.configure()
        tags = {
            "stage": "train",
            "model_family": "hist_gradient_boosting",
            tracking.FINGERPRINT_TAG: trained["fingerprint"],
        }
        for key, value in (
            ("git_commit", git_commit),
            ("dvc_data_md5", tracking.dvc_data_hash()),
            ("dvc_exp_name", environment.experiment),
        ):
            if value:
                tags[key] = value
        reference = pd.read_parquet(PROCESSED / "reference.parquet", columns=list(FEATURES))
        run_info = log_run(
            model,
            params,
            contract,
            trained["metrics"] | {f"holdout_{k}": v for k, v in metrics.items()},
            split_xy(train.head(5))[0],
            reference,
            tags,
            artifacts=[
                (PLOTS, "plots"),
                (REPORTS / "segments.json", None),
                (REPORTS / "feature_importance.json", None),
            ],
        )
    progress.say(f"MLflow run {run_info['run_id']}, model {run_info['model_id']}")

    with progress.step("register the model and apply the promotion gate"):
        decision = register_and_gate(
            model_uri=run_info["model_uri"],
            run_id=run_info["run_id"],
            name=params.evaluate.model_name,
            candidate_metrics=metrics,
            x=x,
            y=y_series,
            min_improvement=params.evaluate.min_improvement,
            tags={"git_commit": git_commit} if git_commit else {},
            experiment=environment.experiment,
            baseline_rev=environment.dvc_exp_baseline_rev,
        )
        body = json.dumps(decision.as_dict(), indent=2)
        write_text(PROMOTION, body)
        with mlflow.start_run(run_id=run_info["run_id"]), tempfile.TemporaryDirectory() as tmp_dir:
            path = Path(tmp_dir) / "promotion.json"
            path.write_text(body, encoding="utf-8")
            mlflow.log_artifact(str(path))
            mlflow.set_tag("gate_decision", decision.outcome)
    # What this workspace registered, by fingerprint only: the version number and the verdict
    # depend on the registry (reports/promotion.json, not tracked), this does not.
    write_text(
        REGISTERED,
        json.dumps(
            {"model_name": decision.model_name, "fingerprint": trained["fingerprint"]}, indent=2
        ),
    )
    progress.say(
        f"holdout RMSE {metrics['rmse']:.0f}, MAE {metrics['mae']:.0f}, R² {metrics['r2']:.4f} "
        f"(linear baseline MAE {metrics['baseline_linear_mae']:.0f})"
    )
    version = f"{decision.model_name} v{decision.candidate_version}"
    progress.say(f"{version} -> @{decision.alias}: {decision.reason}")
    progress.done()
    return 0


if __name__ == "__main__":
    finish(main())
