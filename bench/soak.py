"""Soak test (minutes, not in CI): a run killed at random points and resumed ends where an
uninterrupted run ends, and a full disk ends in one line and an OUT that resumes.

    .venv/bin/python bench/soak.py [--tracks 1000] [--kills 5] [--seed 0] [--workdir DIR]

1. Synthesize ``--tracks`` tiny clips (1 s tones, seeded).
2. Reference: one uninterrupted ``soundclust run --no-analysis`` into OUT_ref.
3. Soak: the same run into OUT_soak, SIGKILLed (its whole process group: driver and Ray) at
   ``--kills`` random moments drawn from the reference's duration, then run to completion.
4. Compare: the feature shards of both OUTs, row for row (sorted by track_id), must be equal,
   and errors.parquet must be empty in both. Prints the slowdown of the soak against the
   reference (a ratio measured in this run).
5. Disk full (when ``mount -t tmpfs`` works, i.e. as root): a run into a tmpfs too small for
   OUT must exit with one line; after remounting it larger, the rerun completes.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from soundclust_ray import shards

SR = 22050


def synthesize(folder: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(SR) / SR
    for i in range(n):
        y = 0.3 * np.sin(2 * np.pi * rng.uniform(80, 4000) * t) + 0.05 * rng.normal(size=SR)
        sf.write(folder / f"clip{i:05d}.wav", y.astype(np.float32), SR)


def command(folder: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "soundclust_ray.cli",
        "run",
        str(folder),
        "--out",
        str(out),
        "--no-analysis",
        "--features",
        "timbre",
        "--quiet",
    ]


def run_to_end(folder: Path, out: Path) -> tuple[int, float, str]:
    started = time.perf_counter()
    done = subprocess.run(command(folder, out), capture_output=True, text=True)
    return done.returncode, time.perf_counter() - started, (done.stdout + done.stderr).strip()


def run_and_kill(folder: Path, out: Path, after_s: float) -> bool:
    """Start a run and SIGKILL its process group after ``after_s``; True when it was killed."""
    proc = subprocess.Popen(
        command(folder, out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        proc.wait(after_s)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def features(out: Path) -> pd.DataFrame:
    frames = [t.to_pandas() for t in shards.iter_shard_tables(str(out), "features")]
    return pd.concat(frames).sort_values("track_id").reset_index(drop=True)


def soak(work: Path, n_tracks: int, kills: int, seed: int) -> bool:
    folder = work / "clips"
    synthesize(folder, n_tracks, seed)
    code, reference_s, text = run_to_end(folder, work / "out_ref")
    assert code == 0, text
    rng = random.Random(seed)
    started = time.perf_counter()
    killed = sum(
        run_and_kill(folder, work / "out_soak", rng.uniform(0.1, 1.0) * reference_s)
        for _ in range(kills)
    )
    code, _, text = run_to_end(folder, work / "out_soak")
    soak_s = time.perf_counter() - started
    assert code == 0, text
    ref, got = features(work / "out_ref"), features(work / "out_soak")
    equal = ref.equals(got)
    print(
        f"{n_tracks} tracks, {killed}/{kills} runs killed mid-way; outputs equal: {equal}; "
        f"soak/uninterrupted time: {soak_s / reference_s:.2f}x"
    )
    return equal and len(got) == n_tracks


def disk_full(work: Path, seed: int) -> bool | None:
    """A run into a 2 MiB tmpfs: one line and a failed exit; remounted at 256 MiB it resumes."""
    mount = work / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)]).returncode:
        print("disk full: skipped (mount -t tmpfs not permitted here)")
        return None
    try:
        folder = work / "clips_disk"
        synthesize(folder, 200, seed)
        code, _, text = run_to_end(folder, mount / "out")
        lines = text.splitlines()
        print(f"disk full: exit {code}, {len(lines)} line(s): {lines[-1] if lines else ''}")
        subprocess.run(["mount", "-o", "remount,size=256m", str(mount)], check=True)
        resumed, _, text = run_to_end(folder, mount / "out")
        print(f"after making room: exit {resumed}")
        return code != 0 and len(lines) == 1 and resumed == 0
    finally:
        subprocess.run(["umount", str(mount)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="soundclust-soak-"))
    ok = soak(work, args.tracks, args.kills, args.seed)
    full = disk_full(work, args.seed)
    return 0 if ok and full is not False else 1


if __name__ == "__main__":
    sys.exit(main())
