"""A stage's process ends with its exit status, after its threads and exit handlers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

STAGE = """
import atexit, sys, threading, time
from pathlib import Path
from pipelines.process import finish

out = Path(sys.argv[1])
def late() -> None:
    time.sleep(0.3)
    out.write_text("thread done\\n")
threading.Thread(target=late).start()
atexit.register(lambda: print("exit handler ran", flush=True))
print("buffered, not flushed", end="")
finish(int(sys.argv[2]))
"""


@pytest.mark.parametrize("code", [0, 3])
def test_finish_waits_for_threads_runs_exit_handlers_and_keeps_the_status(
    tmp_path: Path, code: int
) -> None:
    out = tmp_path / "thread.txt"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", STAGE, str(out), str(code)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == code, proc.stderr
    assert out.read_text() == "thread done\n"
    assert proc.stdout == "buffered, not flushedexit handler ran\n"
