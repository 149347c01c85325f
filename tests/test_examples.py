"""The README's engine example runs (a few steps of it: its full output is quoted in the README)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_conv_bn_onecycle_example_trains_and_reports_test_accuracy():
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "conv_bn_onecycle.py"), "--steps", "4",
         "--batch-size", "32"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    match = re.search(r"17,018 parameters, 4 steps of 32 in \d+ s: test accuracy (0\.\d{4})",
                      done.stdout)
    assert match, done.stdout
    assert 0.0 <= float(match.group(1)) <= 1.0
