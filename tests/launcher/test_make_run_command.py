"""`make run` starts its supervisor by the checkout's absolute path: a newcomer's
`kill -INT $(pgrep -f "$PWD/deploy/run_local.py")` (README, "Ctrl-C") found nothing while the
command line read `.venv/bin/python deploy/run_local.py`."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_run_names_the_supervisor_by_its_absolute_path():
    planned = subprocess.run(
        ["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()

    launch = [line for line in planned if line.rstrip().endswith("run_local.py")]
    assert len(launch) == 1 and launch[0].split()[-1] == f"{ROOT}/deploy/run_local.py", launch
