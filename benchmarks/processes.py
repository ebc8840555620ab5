"""The benchmarks' view of the processes they start: a server's workers and their CPU time."""

from __future__ import annotations

import os
import resource
from pathlib import Path

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
"""The local PostgreSQL server's admin database (the benchmarks' databases are made from it)."""


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


def database_backends(database: str) -> list[int]:
    """The local PostgreSQL server's processes connected to ``database`` now (one per client
    connection: the API workers' pools, the prediction log's writers)."""
    import psycopg

    with psycopg.connect(PG_ADMIN) as admin:
        query = "SELECT pid FROM pg_stat_activity WHERE datname = %s"
        return [int(pid) for (pid,) in admin.execute(query, (database,))]


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
