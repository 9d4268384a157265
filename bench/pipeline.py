"""Ray overhead and scaling of the feature pipeline, against a serial in-process loop.

On the same real clips (default: the 315 mp3s of shared/data/mer4q_genre, 30 s each), in one
process: (1) a plain loop calling the feature stage's per-track function on one core, (2) the
Ray Data pipeline with one feature actor, (3) with one actor per core. Each pipeline runs twice,
on half the clips and on all of them: the difference is the time of the second half's tracks
alone, so the *rate* (tracks/s) comes without the fixed start-up (actor pools, Ray Data's own
actors), which is printed apart as the intercept; bench/e2e.py times start-up and all end to end.
Prints the 1-actor overhead per track (goal ≤ 10 %) and the all-core speed-up over the loop
(goal ≥ 0.8 × cores). Ray start-up is excluded.

    python bench/pipeline.py [--families timbre] [--clips DIR] [--limit N]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from soundclust_ray import outdir
from soundclust_ray.config import RunConfig
from soundclust_ray.manifest import build_manifest
from soundclust_ray.pipeline import stream_to_writer
from soundclust_ray.ray_env import cluster_cpus, init_ray
from soundclust_ray.runinfo import product_hash
from soundclust_ray.stages.features import FeatureStage, feature_resources
from soundclust_ray.stages.pools import map_stage, tracks_dataset
from soundclust_ray.stages.writer import FamilyShardWriter

MER4Q = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mer4q_genre" / "audio"


def serial_loop(manifest: pd.DataFrame, cfg: RunConfig) -> float:
    """One core, like one actor: Ray pins an actor's BLAS/OpenMP pools to its one CPU."""
    from threadpoolctl import threadpool_limits

    stage = FeatureStage(cfg)
    start = time.perf_counter()
    with threadpool_limits(limits=1):
        for path in manifest["path"]:
            stage.compute_track(path, stage.families)
    return time.perf_counter() - start


def ray_run(manifest: pd.DataFrame, cfg: RunConfig, actors: int) -> float:
    out = tempfile.mkdtemp(prefix="bench_pipeline_")
    try:
        families = cfg.features.families
        start = time.perf_counter()
        ds = tracks_dataset(manifest, cfg.batch_size, cfg.pools)
        ds = map_stage(ds, FeatureStage, cfg, feature_resources(cfg), actors, (families,))
        products = [outdir.feature_product(f) for f in families]
        targets = tuple(
            (f, p, product_hash(cfg, p)) for f, p in zip(families, products, strict=True)
        )
        args = (out, targets, FeatureStage.WRITES, cfg.shard_rows)
        totals = dict.fromkeys(products, len(manifest))
        results = stream_to_writer(ds, FamilyShardWriter, args, totals, cfg, lambda _t: None, False)
        seconds = time.perf_counter() - start
        assert all(r.n_ok == len(manifest) for r in results), results
        return seconds
    finally:
        shutil.rmtree(out, ignore_errors=True)


def marginal(manifest: pd.DataFrame, cfg: RunConfig, actors: int) -> tuple[float, float]:
    """(seconds per track, start-up seconds) of the pipeline with ``actors`` actors: timed on
    the first half of the tracks and on all of them, a line through the two points."""
    half = len(manifest) // 2
    t_half = ray_run(manifest.iloc[:half], cfg, actors)
    t_all = ray_run(manifest, cfg, actors)
    per_track = (t_all - t_half) / (len(manifest) - half)
    return per_track, t_all - per_track * len(manifest)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="timbre")
    parser.add_argument("--clips", type=Path, default=MER4Q, help="folder of clips")
    parser.add_argument("--limit", type=int, default=None, help="at most this many clips")
    args = parser.parse_args()
    base = RunConfig()
    cfg = dataclasses.replace(
        base, features=dataclasses.replace(base.features, families=tuple(args.families.split(",")))
    )
    manifest = build_manifest(str(args.clips), allow_outside_root=True, limit=args.limit)
    init_ray()
    cores = cluster_cpus()
    n = len(manifest)
    print(f"{n} tracks from {args.clips}, families={args.families}, {cores} cores")
    ray_run(manifest.iloc[: min(4, n)], cfg, 1)  # warm Ray Data and the worker pool
    loop = serial_loop(manifest, cfg) / n
    one, one_start = marginal(manifest, cfg, 1)
    every, every_start = marginal(manifest, cfg, cores)
    print(f"  serial loop      {1 / loop:7.2f} tracks/s")
    print(f"  Ray, 1 actor     {1 / one:7.2f} tracks/s   (+ {one_start:.1f} s start-up)")
    print(f"  Ray, {cores} actors    {1 / every:7.2f} tracks/s   (+ {every_start:.1f} s start-up)")
    print(f"  Ray overhead at 1 actor: {one / loop - 1:+.1%} per track (goal ≤ +10 %)")
    speedup = loop / every
    print(
        f"  speed-up with {cores} actors over the loop: {speedup:.2f}× "
        f"= {speedup / cores:.2f} × cores (goal ≥ 0.80 × cores); "
        f"{one / every:.2f}× one actor's rate"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
