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
# Runs a command and reports the peak RSS of its whole process tree (max over descendants) and
# the CPU seconds it used (user + system): on a shared machine CPU time is the steadier figure.
_MEASURE = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]);"
    "u = resource.getrusage(resource.RUSAGE_CHILDREN);"
    "print(u.ru_maxrss, u.ru_utime + u.ru_stime, file=sys.stderr); sys.exit(rc)"
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


def _timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> dict[str, float]:
    """Wall seconds, CPU seconds and peak RSS (MB) of ``cmd``; raises if it fails."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, *cmd], cwd=cwd, env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    peak_kb, cpu = proc.stderr.strip().splitlines()[-1].split()
    return {"seconds": elapsed, "cpu_seconds": float(cpu), "peak_mb": int(peak_kb) / 1024}


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
    for role in ("AUTHOR", "COMMITTER"):  # `dvc exp run` commits the experiment
        env.setdefault(f"GIT_{role}_NAME", "bench")
        env.setdefault(f"GIT_{role}_EMAIL", "bench@example.com")
    try:
        copy_project(work)
        (work / "mlruns").mkdir()
        (work / "dvc.lock").unlink(missing_ok=True)
        results: dict[str, dict[str, float]] = {}
        results["generate data"] = _timed(
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
        for cmd in (["git", "init", "-q"], ["dvc", "commit", "-f", "-q", "data.dvc"]):
            subprocess.run(cmd, cwd=work, env=env, check=True)
        for cmd in (["git", "add", "-A"], ["git", "commit", "-q", "-m", "copy"]):
            subprocess.run(cmd, cwd=work, env=env, check=True)

        results["dvc repro (full)"] = _timed(["dvc", "repro"], work, env)
        results["dvc repro (no-op)"] = _timed(["dvc", "repro"], work, env)
        for cmd in (["git", "add", "-A"], ["git", "commit", "-q", "-m", "run"]):
            subprocess.run(cmd, cwd=work, env=env, check=True)
        results["dvc exp run -S train.learning_rate=0.05"] = _timed(
            ["dvc", "exp", "run", "-S", "train.learning_rate=0.05"], work, env
        )
        subprocess.run(["git", "checkout", "-q", "--", "."], cwd=work, env=env, check=True)
        for stage in STAGES:
            results[f"stage {stage}"] = _timed(
                ["dvc", "repro", "--force", "--single-item", stage], work, env
            )
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\n`dvc repro` on {args.rows:,} rows ({os.cpu_count()} cores)")
    print(f"{'step':<42}{'seconds':>9}{'CPU s':>8}{'peak MB':>9}")
    for name, r in results.items():
        print(f"{name:<42}{r['seconds']:>9.1f}{r['cpu_seconds']:>8.1f}{r['peak_mb']:>9.0f}")
    out = ROOT / "benchmarks" / "results" / f"pipeline-{args.rows}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": args.rows, "results": results}, indent=2))
    print(f"written {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
