"""Time `dvc repro` end to end and per stage, with peak memory, in a temporary copy of the repo.

Run ``python benchmarks/pipeline.py --rows 20000`` (``make bench-pipeline``) or with
``--rows 1000000`` (``make bench-pipeline-1m``). The copy uses its own MLflow store, so the
benchmark never touches your registry. Prints a table and writes JSON to
``benchmarks/results/pipeline-<rows>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("validate", "preprocess", "train", "evaluate")
# Runs a command and reports the peak RSS of its whole process tree (max over descendants).
_MEASURE = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]);"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)"
)


def copy_project(dest: Path) -> None:
    """Copy the project's tracked and untracked-but-not-ignored files, without tests and
    benchmarks, into ``dest`` (also used by ``tests/pipelines/test_dvc_repro.py``)."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for rel in listed:
        src = ROOT / rel
        if src.is_file() and not rel.startswith(("tests/", "benchmarks/")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of ``cmd``; raises if it fails."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, *cmd], cwd=cwd, env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    peak_kb = int(proc.stderr.strip().splitlines()[-1])
    return elapsed, peak_kb / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="carprice-bench-"))
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlruns' / 'mlflow.db'}"
    try:
        copy_project(work)
        (work / "mlruns").mkdir()
        (work / "dvc.lock").unlink(missing_ok=True)
        results: dict[str, dict[str, float]] = {}
        gen_s, gen_mb = _timed(
            [
                "carprice",
                "data",
                "sample",
                "--rows",
                str(args.rows),
                "--seed",
                str(args.seed),
                "--out",
                "data/raw/cars.csv",
            ],
            work,
            env,
        )
        results["generate data"] = {"seconds": gen_s, "peak_mb": gen_mb}
        subprocess.run(["git", "init", "-q"], cwd=work, check=True)
        subprocess.run(["dvc", "commit", "-f", "-q", "data.dvc"], cwd=work, env=env, check=True)

        full_s, full_mb = _timed(["dvc", "repro"], work, env)
        results["dvc repro (full)"] = {"seconds": full_s, "peak_mb": full_mb}
        noop_s, noop_mb = _timed(["dvc", "repro"], work, env)
        results["dvc repro (no-op)"] = {"seconds": noop_s, "peak_mb": noop_mb}
        for stage in STAGES:
            s, mb = _timed(["dvc", "repro", "--force", "--single-item", stage], work, env)
            results[f"stage {stage}"] = {"seconds": s, "peak_mb": mb}
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\n`dvc repro` on {args.rows:,} rows ({os.cpu_count()} cores)")
    print(f"{'step':<22}{'seconds':>10}{'peak MB':>10}")
    for name, r in results.items():
        print(f"{name:<22}{r['seconds']:>10.1f}{r['peak_mb']:>10.0f}")
    out = ROOT / "benchmarks" / "results" / f"pipeline-{args.rows}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": args.rows, "results": results}, indent=2))
    print(f"written {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
