"""Ray overhead and scaling of the feature pipeline, against a serial in-process loop.

On the same real clips (default: the 315 mp3s of shared/data/mer4q_genre, 30 s each), in one
process: (1) a plain loop calling the pass's stage (stages/track.py: one decode, every product)
on one track at a time on one core, (2) the run's Ray Data pass with one actor, (3) with one
actor per core. Each pipeline runs twice, on half the clips and on all of them: the difference
is the time of the second half's tracks alone, so the *rate* (tracks/s) comes without the fixed
start-up (actor pools, Ray Data's own actors), which is printed apart as the intercept;
bench/e2e.py times start-up and all end to end.
Prints the 1-actor overhead per track (goal ≤ 10 %) and the all-core speed-up over the loop
(goal ≥ 0.8 × cores). Ray start-up is excluded.

    python bench/pipeline.py [--families timbre] [--embed musicnn] [--clips DIR] [--limit N]
        [--repeat 3]

``--repeat R`` lists every clip R times under distinct track ids (the files read from the page
cache like the first time): at ≈ 40 ms of timbre per 30 s clip, the 315 clips are under 4 s of
work for two cores, too short beside the pools' start-up to read a rate off.
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

from soundclust_ray.config import RunConfig
from soundclust_ray.manifest import build_manifest
from soundclust_ray.pipeline import pass_target, products_of, stream_to_writer
from soundclust_ray.ray_env import cluster_cpus, init_ray
from soundclust_ray.stages.passes import PRODUCTS_FIELD, pass_key
from soundclust_ray.stages.pools import map_stage, tracks_dataset
from soundclust_ray.stages.track import TrackStage
from soundclust_ray.stages.writer import PassShardWriter

MER4Q = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mer4q_genre" / "audio"
PASS_COLUMNS = ("track_id", "path", PRODUCTS_FIELD)


def pass_rows(manifest: pd.DataFrame, cfg: RunConfig) -> pd.DataFrame:
    keys = ",".join(pass_key(p) for p in products_of(cfg))
    return manifest[["track_id", "path"]].assign(**{PRODUCTS_FIELD: keys})


def pass_stage_args(cfg: RunConfig) -> tuple:
    """(product keys, backends whose model runs in the actor): the CPU default."""
    return tuple(pass_key(p) for p in products_of(cfg)), cfg.embed.backends


def serial_loop(manifest: pd.DataFrame, cfg: RunConfig) -> float:
    """One core, like one actor: Ray pins an actor's BLAS/OpenMP pools to its one CPU."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    stage = TrackStage(cfg, *pass_stage_args(cfg))
    columns = {k: v.to_numpy() for k, v in pass_rows(manifest, cfg).items()}
    start = time.perf_counter()
    with threadpool_limits(limits=1):
        for i in range(len(manifest)):
            stage({k: v[i : i + 1] for k, v in columns.items()})
    return time.perf_counter() - start


def ray_run(manifest: pd.DataFrame, cfg: RunConfig, actors: int) -> float:
    out = tempfile.mkdtemp(prefix="bench_pipeline_")
    try:
        start = time.perf_counter()
        ds = tracks_dataset(pass_rows(manifest, cfg), cfg.batch_size, cfg.pools, PASS_COLUMNS)
        resources = TrackStage.resources(cfg)
        ds = map_stage(ds, TrackStage, cfg, resources, actors, pass_stage_args(cfg))
        products = products_of(cfg)
        args = (out, tuple(pass_target(cfg, p, p) for p in products), cfg.shard_rows)
        totals = dict.fromkeys(products, len(manifest))
        results = stream_to_writer(ds, PassShardWriter, args, totals, cfg, lambda _t: None, False)
        seconds = time.perf_counter() - start
        assert all(r.n_ok == len(manifest) for r in results), results
        return seconds
    finally:
        shutil.rmtree(out, ignore_errors=True)


def repeated(manifest: pd.DataFrame, times: int) -> pd.DataFrame:
    """``manifest`` listed ``times`` times, each copy's track ids suffixed ``#<copy>``."""
    copies = [manifest.assign(track_id=manifest["track_id"] + f"#{i}") for i in range(times)]
    return pd.concat(copies, ignore_index=True)


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
    parser.add_argument("--embed", default="", help="backends whose model runs in the actors")
    parser.add_argument("--clips", type=Path, default=MER4Q, help="folder of clips")
    parser.add_argument("--limit", type=int, default=None, help="at most this many clips")
    parser.add_argument("--repeat", type=int, default=3, help="list every clip this many times")
    args = parser.parse_args()
    base = RunConfig()
    families = tuple(args.families.split(","))
    backends = tuple(b for b in args.embed.split(",") if b)
    cfg = dataclasses.replace(
        base,
        features=dataclasses.replace(base.features, families=families),
        embed=dataclasses.replace(base.embed, backends=backends),
    )
    manifest = repeated(
        build_manifest(str(args.clips), allow_outside_root=True, limit=args.limit), args.repeat
    )
    init_ray()
    cores = cluster_cpus()
    n = len(manifest)
    print(f"{n} tracks from {args.clips}, {', '.join(products_of(cfg))}, {cores} cores")
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
