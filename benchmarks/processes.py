"""The benchmarks' view of the processes they start: a server's workers and their CPU time."""

from __future__ import annotations

import os
import resource
from pathlib import Path


def workers(pid: int) -> list[int]:
    """The child processes of ``pid`` (uvicorn's workers: spawned interpreters), without
    multiprocessing's resource tracker."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [
        int(p)
        for p in children
        if b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()
    ]


def server_pids(port: int) -> list[int]:
    """The server this process started on ``port`` (a child of it) and its workers, down the
    whole tree (``mlflow models serve`` starts a uvicorn that starts the workers)."""
    for pid in workers(os.getpid()):
        if str(port).encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
            tree, i = [pid], 0
            while i < len(tree):
                tree += workers(tree[i])
                i += 1
            return tree
    raise RuntimeError(f"no server of this benchmark on port {port}")


def cpu_s(pids: list[int]) -> float:
    """CPU seconds the processes' live threads have run (schedstat: nanoseconds, exact)."""
    total = 0
    for pid in pids:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue  # a process that ended (a worker restarted)
        for task in tasks:
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue  # a thread that just ended
    return total / 1e9


def children_cpu_s() -> float:
    """CPU seconds of this process's finished children (wrk, the probe, the hostile clients)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
