"""Ray overhead and scaling of the feature pipeline, against a serial in-process loop.

On the same real clips, in one process: (1) a plain loop calling the feature stage's per-track
function, (2) the Ray Data pipeline with one feature actor, (3) with one actor per core. Prints
tracks/s, the 1-actor overhead (goal ≤ 10 %) and the all-core speed-up over the loop
(goal ≥ 0.8 × cores). Ray start-up is excluded; actor start-up is included.

    python bench/pipeline.py [--families timbre,classic,soundspace] [--repeat 2] [--clips N]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
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

GTZAN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gtzan_mini"


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="timbre,classic,soundspace")
    parser.add_argument("--clips", type=int, default=37, help="GTZAN clips to use (30 s each)")
    parser.add_argument("--repeat", type=int, default=2, help="tile the clips this many times")
    args = parser.parse_args()
    base = RunConfig()
    cfg = dataclasses.replace(
        base,
        batch_size=1,
        features=dataclasses.replace(base.features, families=tuple(args.families.split(","))),
    )
    manifest = build_manifest(str(GTZAN / "labels.csv")).iloc[: args.clips]
    manifest = pd.concat(
        [manifest.assign(track_id=manifest["track_id"] + f"#{r}") for r in range(args.repeat)],
        ignore_index=True,
    )
    init_ray()
    cores = cluster_cpus()
    n = len(manifest)
    print(
        f"{n} tracks (GTZAN 30 s clips), families={args.families}, {cores} cores, "
        f"{os.cpu_count()} visible CPUs"
    )
    ray_run(manifest.iloc[: min(4, n)], cfg, 1)  # warm Ray Data and the worker pool
    loop_s = serial_loop(manifest, cfg)
    one_s = ray_run(manifest, cfg, 1)
    all_s = ray_run(manifest, cfg, cores)
    rows = [("serial loop", loop_s), ("Ray, 1 actor", one_s), (f"Ray, {cores} actors", all_s)]
    for name, seconds in rows:
        print(f"  {name:<16} {n / seconds:7.2f} tracks/s   ({seconds:.1f} s)")
    overhead = one_s / loop_s - 1
    speedup = loop_s / all_s
    print(f"  Ray overhead at 1 actor: {overhead:+.1%} (goal ≤ +10 %)")
    print(
        f"  speed-up with {cores} actors over the loop: {speedup:.2f}× "
        f"= {speedup / cores:.2f} × cores (goal ≥ 0.80 × cores)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
