"""``make bench-gpu`` on a host without CUDA: one line, exit status 0, nothing else run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_bench_skips_cleanly_without_cuda() -> None:
    """CUDA hidden (as on a CPU host): the script prints its skip line and succeeds."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "no CUDA device: skipped\n"


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_target_runs_the_gpu_bench() -> None:
    """The target's last command is the script above, run by the project's venv python (also
    under ``make test``, where the nested make would otherwise print its directory lines)."""
    proc = subprocess.run(
        ["make", "--no-print-directory", "-n", "bench-gpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == ".venv/bin/python bench/gpu.py"
