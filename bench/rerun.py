"""A rerun with nothing new to do answers at once (UX issue: a no-op rerun in < 5 s).

    .venv/bin/python bench/rerun.py [--tracks 8] [--workdir DIR]

Synthesizes ``--tracks`` short clips, runs ``soundclust run`` on them (features, the default
musicnn embedding and the analysis: the reference, measured in this run), then the same
command again, which finds every track in OUT and the analysis current. Prints both wall
times, the ratio, and whether the rerun stayed under the 5 s goal.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 22050
GOAL_S = 5.0


def synthesize(folder: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(4 * SR) / SR
    for i in range(n):
        y = 0.4 * np.sin(2 * np.pi * (110 + 55 * i) * t) + 0.05 * rng.standard_normal(t.size)
        sf.write(folder / f"clip_{i:03d}.wav", y.astype(np.float32), SR)


def timed_run(args: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "soundclust_ray.cli", *args], capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"soundclust failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=8)
    parser.add_argument("--workdir", default=None)
    opts = parser.parse_args()
    work = Path(opts.workdir or tempfile.mkdtemp(prefix="soundclust-rerun-"))
    clips, out = work / "clips", work / "out"
    synthesize(clips, opts.tracks)
    command = ["run", str(clips), "--out", str(out), "--k", "2"]
    first, _ = timed_run(command)
    again, text = timed_run(command)
    noop = "nothing left to compute" in text and "is current" in text
    print(f"first run   {first:6.1f} s  ({opts.tracks} tracks: features, musicnn, analysis)")
    print(f"no-op rerun {again:6.1f} s  ({again / first:.2f} x the first run)")
    print(
        f"goal < {GOAL_S:.0f} s: {'met' if again < GOAL_S else 'NOT met'}; "
        f"rerun skipped Ray and the analysis: {noop}"
    )


if __name__ == "__main__":
    main()
