"""The cheaper multiprocess values write what prometheus_client's collector reads, in a fresh
interpreter each (the value class is chosen before the first metric exists)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

COLLECT = """
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from serving.monitoring import metrics  # installs the value class first
from prometheus_client import values
assert values.ValueClass.__name__ == "FileValue", values.ValueClass
c = Counter("t_requests", "x", ["path"])
for i in range(1000):  # enough keys to grow the file: positions must survive the new mmap
    c.labels(f"/p{i}").inc(2)
c.labels("/p7").inc(0.5)
g = Gauge("t_depth", "x", multiprocess_mode="livesum")
g.set(3)
h = Histogram("t_seconds", "x", buckets=(0.1, 1))
h.observe(0.05)
h.observe(5)
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry)
got = {(s.name, tuple(sorted(s.labels.items()))): s.value
       for m in registry.collect() for s in m.samples}
assert got[("t_requests_total", (("path", "/p7"),))] == 2.5, got
assert got[("t_requests_total", (("path", "/p999"),))] == 2.0
assert got[("t_depth", ())] == 3
assert got[("t_seconds_bucket", (("le", "0.1"),))] == 1
assert got[("t_seconds_bucket", (("le", "+Inf"),))] == 2
assert got[("t_seconds_sum", ())] == 5.05
print("ok")
"""

LATE = """
from prometheus_client import Counter
Counter("t_early", "x").inc()  # a metric in prometheus_client's own files first
from serving.monitoring import metrics
"""


def run(code: str, directory: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(directory)}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )


def test_updates_land_in_the_files_the_collector_reads(tmp_path: Path) -> None:
    done = run(COLLECT, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_installing_after_a_metric_exists_is_refused(tmp_path: Path) -> None:
    done = run(LATE, tmp_path)
    assert done.returncode != 0
    assert "must run before any metric is created" in done.stderr
