"""Peak memory of a whole run as the corpus grows: 100 vs 1,000 tracks (goal: flat).

Each size runs ``soundclust run`` in a fresh subprocess (embedded local Ray, features only) while
this script samples, every 0.2 s, the resident memory of the driver and of the whole process tree
(driver, raylet, workers) plus the Ray object store's shared memory. The naive reference is the
matrix the driver finally holds (tracks × columns × 4 bytes), to show what grows and what does not.

    python bench/memory.py [--sizes 100,1000] [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import soundfile as sf

SR = 22050


def make_corpus(root: Path, n: int, seconds: float) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SR)) / SR
    for i in range(n):
        y = 0.5 * np.sin(2 * np.pi * rng.uniform(80, 4000) * t) + 0.05 * rng.standard_normal(t.size)
        sf.write(root / f"t{i:05d}.wav", y.astype(np.float32), SR, subtype="PCM_16")


def tree_rss(root: psutil.Process) -> tuple[int, int]:
    """(driver RSS, RSS of the driver and every descendant) in bytes."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    try:
        driver = root.memory_info().rss
    except psutil.NoSuchProcess:
        driver = 0
    return driver, total


def measure(corpus: Path, out: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "soundclust_ray.cli",
        "run",
        str(corpus),
        "--out",
        str(out),
        "--no-analysis",
        "--quiet",
        "--shard-rows",
        "64",
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = psutil.Process(proc.pid)
    peaks = {"driver": 0, "tree": 0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            driver, total = tree_rss(root)
            peaks["driver"] = max(peaks["driver"], driver)
            peaks["tree"] = max(peaks["tree"], total)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    code = proc.wait()
    done.set()
    sampler.join()
    if code != 0:
        raise SystemExit(f"run failed with exit code {code}")
    return {**peaks, "seconds": time.perf_counter() - start}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--seconds", type=float, default=3.0, help="clip length")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench_memory_"))
    mib = 1024**2
    try:
        results = {}
        for n in sizes:
            corpus = work / f"corpus_{n}"
            corpus.mkdir()
            make_corpus(corpus, n, args.seconds)
            results[n] = measure(corpus, work / f"out_{n}")
            r = results[n]
            matrix = n * 180 * 4
            print(
                f"{n:>6} tracks: peak driver RSS {r['driver'] / mib:7.1f} MiB, whole tree "
                f"{r['tree'] / mib:7.1f} MiB, {r['seconds']:.1f} s, "
                f"{n / r['seconds']:.1f} tracks/s "
                f"(final matrix {matrix / mib:.2f} MiB)",
                flush=True,
            )
        small, large = results[sizes[0]], results[sizes[-1]]
        print(
            f"growth {sizes[0]} → {sizes[-1]} tracks ({sizes[-1] / sizes[0]:.0f}× the data): "
            f"driver {large['driver'] / small['driver']:.2f}×, whole tree "
            f"{large['tree'] / small['tree']:.2f}× (goal: ≈ 1×)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
