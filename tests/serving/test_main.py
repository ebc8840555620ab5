"""``serving.main:app`` as uvicorn imports it: a bad setting is one line and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys


def test_a_bad_setting_stops_the_import_with_one_line() -> None:
    env = {**os.environ, "CARPRICE_BATCH_MAX": "lots"}
    done = subprocess.run(
        [sys.executable, "-c", "import serving.main as m; m.app"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert (
        done.stderr == "configuration error: CARPRICE_BATCH_MAX: Input should be a valid "
        "integer, unable to parse string as an integer\n"
    )
