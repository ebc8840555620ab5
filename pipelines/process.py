"""How a stage's process ends: as soon as its work is done, without tearing its imports down.

validate imports Great Expectations and evaluate MLflow and skops: some 3,000 modules each. The
interpreter's shutdown frees them one by one, which took 0.9 s (validate) and 1.3-1.6 s
(evaluate) of every ``dvc repro`` on a 2-core machine, after the last output was written. A stage
ends here instead: it waits for its non-daemon threads, runs the ``atexit`` handlers as a normal
exit would (MLflow ends a run left open and removes its temporary directories there), flushes its
streams and leaves with ``os._exit``. Nothing is lost by it: every output is written whole
(:mod:`pipelines.atomic`) before ``main`` returns. An exception still exits the usual way, with
its traceback.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from typing import NoReturn


def finish(code: int) -> NoReturn:
    """End the process with exit status ``code`` once its threads and exit handlers are done."""
    current = threading.current_thread()
    for thread in threading.enumerate():
        if thread is not current and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
