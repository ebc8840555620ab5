"""Progress lines of the pipeline stages: what each step does and how long it took.

Each stage prints ``<stage>: <step> ... <seconds>`` as it goes and a total at the end, so a long
``dvc repro`` is never silent. Lines are flushed at once (DVC shows a stage's output live).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Progress:
    """Timed progress lines for one stage."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.started = time.perf_counter()

    def say(self, message: str) -> None:
        """Print one line about this stage."""
        print(f"{self.stage}: {message}", file=sys.stdout, flush=True)

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        """Print ``what`` with the seconds it took once the block is done."""
        started = time.perf_counter()
        yield
        self.say(f"{what} ({time.perf_counter() - started:.1f} s)")

    def done(self, summary: str = "done") -> None:
        """The stage's closing line with its total time since this object was made."""
        self.say(f"{summary} in {time.perf_counter() - self.started:.1f} s")
