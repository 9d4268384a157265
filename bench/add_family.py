"""Adding a feature family to an existing OUT costs that family's time only.

    nice -n 5 .venv/bin/python bench/add_family.py [--clips 60] [--repeats 3] [--workdir DIR]

On ``--clips`` real 30 s mp3 clips of shared/data/mer4q_genre, in one process and one local
Ray (started and warmed on two clips first, so no run pays Ray's start or a JIT compile):

(a) ``run --features timbre`` into a fresh OUT;
(b) ``run --features timbre,classic`` on that OUT: only classic is pending;
(c) ``run --features classic`` into another fresh OUT: the reference, measured in this run.

Each repeat runs (a), then (b) and (c) in alternating order, so a machine whose load drifts
weighs on both. Prints each wall time (products only: ``--no-analysis``), the median ratio
(b) / (c) (≈ 1.0 when adding a family costs that family alone) and whether (b) left every
timbre shard as it was (same names, modification times and SHA-256).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from soundclust_ray import outdir, shards
from soundclust_ray.cli import main as soundclust

MER4Q = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mer4q_genre"
TIMBRE = outdir.feature_product("timbre")


def timed_run(manifest: Path, out: Path, families: str, limit: int) -> float:
    """Wall seconds of one real ``soundclust run`` of ``families`` (no analysis)."""
    args = ["run", str(manifest), "--out", str(out), "--features", families, "--embed", "none"]
    args += ["--no-analysis", "--quiet", "--limit", str(limit)]
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = soundclust(args)
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"soundclust run {families} into {out} exited {code}")
    return seconds


def shard_state(out: Path, product: str) -> dict[str, tuple[int, str]]:
    """name → (mtime_ns, sha256) of every shard of ``product``."""
    state = {}
    for path in map(Path, shards.list_shards(str(out), product)):
        state[path.name] = (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return state


def one_repeat(manifest: Path, work: Path, clips: int, c_first: bool) -> tuple[float, ...]:
    """(a, b, c) wall seconds and 1.0 when (b) left timbre's shards untouched, else 0.0."""
    pair, alone = work / "timbre_then_classic", work / "classic_alone"
    for folder in (pair, alone):
        shutil.rmtree(folder, ignore_errors=True)
    a = timed_run(manifest, pair, "timbre", clips)
    before = shard_state(pair, TIMBRE)
    c = timed_run(manifest, alone, "classic", clips) if c_first else None
    b = timed_run(manifest, pair, "timbre,classic", clips)
    untouched = bool(before) and shard_state(pair, TIMBRE) == before
    c = c if c_first else timed_run(manifest, alone, "classic", clips)
    return a, b, c, float(untouched)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default=None)
    opts = parser.parse_args()
    work = Path(opts.workdir or tempfile.mkdtemp(prefix="soundclust-add-family-"))
    manifest = MER4Q / "labels.csv"
    shutil.rmtree(work / "warm", ignore_errors=True)
    timed_run(manifest, work / "warm", "timbre,classic", 2)
    rows = [one_repeat(manifest, work, opts.clips, i % 2 == 1) for i in range(opts.repeats)]
    print(f"{opts.clips} mer4q_genre clips (30 s mp3), products only, one warm local Ray")
    print("repeat   (a) timbre fresh   (b) add classic   (c) classic fresh   (b)/(c)")
    for i, (a, b, c, _) in enumerate(rows):
        print(f"{i:6d}   {a:14.1f} s   {b:13.1f} s   {c:15.1f} s   {b / c:7.2f}")
    ratio = statistics.median(b / c for _, b, c, _ in rows)
    untouched = all(u for *_, u in rows)
    print(f"median (b) / (c) = {ratio:.2f}  (target ≈ 1.0: adding a family costs that family only)")
    print(f"timbre shards untouched by (b): {untouched}")
    return 0 if untouched else 1


if __name__ == "__main__":
    raise SystemExit(main())
