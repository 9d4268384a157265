"""Sizing of Ray Data input blocks and actor pools, and the one ``map_batches`` call of a stage.

Stages declare their resources as data (:class:`~soundclust_ray.stages.base.Resources`); a run
may override them per stage (``PoolConfig.stage_resources``). This module turns declarations and
the cluster's size into Ray Data arguments, so no resource literal lives in the pipeline.
"""

from __future__ import annotations

import dataclasses
import math

import pandas as pd

from soundclust_ray.config import PoolConfig, RunConfig
from soundclust_ray.ray_env import cluster_cpus
from soundclust_ray.stages.base import Resources

OVERRIDABLE = ("num_cpus", "num_gpus", "batch_size")


def with_overrides(resources: Resources, stage_name: str, pools: PoolConfig) -> Resources:
    """``resources`` with the run's per-stage overrides applied (unknown fields are refused)."""
    changes = {}
    for name, field, value in pools.stage_resources:
        if name != stage_name:
            continue
        if field not in OVERRIDABLE:
            raise ValueError(f"stage resource {field!r} cannot be set (one of {OVERRIDABLE})")
        changes[field] = int(value) if field == "batch_size" else float(value)
    return dataclasses.replace(resources, **changes) if changes else resources


def block_rows(n_rows: int, batch_size: int, workers: int, pools: PoolConfig) -> int:
    """Rows per input block: about ``blocks_per_worker`` blocks per worker, so the last blocks
    finish together (a track is seconds of work; coarse blocks leave workers idle at the end)."""
    per_block = math.ceil(n_rows / max(1, pools.blocks_per_worker * workers))
    return max(batch_size, min(pools.max_block_rows, per_block))


def tracks_dataset(
    tracks: pd.DataFrame,
    batch_size: int,
    pools: PoolConfig,
    columns: tuple[str, ...] = ("track_id", "path"),
):
    """A Ray Dataset of ``columns`` rows (track_id, path [, families]), cut into blocks sized
    by :func:`block_rows`."""
    import ray.data

    rows = block_rows(len(tracks), batch_size, cluster_cpus(), pools)
    frames = [tracks.iloc[i : i + rows][list(columns)] for i in range(0, len(tracks), rows)]
    return ray.data.from_pandas(frames)


def cpu_pool(resources: Resources) -> int:
    """One actor per ``num_cpus`` of the cluster."""
    return max(1, int(cluster_cpus() / resources.num_cpus))


def writer_pool(pools: PoolConfig) -> tuple[int, int]:
    """Shard-writer actors: one per ``writers_per_cpus`` CPUs (I/O, 0 CPU reserved)."""
    return (1, max(1, cluster_cpus() // pools.writers_per_cpus))


def map_stage(
    ds,
    stage_cls,
    cfg: RunConfig,
    resources: Resources,
    pool_size: int | tuple[int, int],
    args: tuple = (),
):
    """``map_batches`` of a callable-class stage on an actor pool, resources as the stage declares.

    Ray Data restarts dead actors and retries their tasks without limit by default
    (``max_restarts=-1, max_task_retries=-1``); we rely on that on purpose: a killed worker's
    batch is recomputed, and the writer never sees a partial batch.
    """
    import ray.data

    resources = with_overrides(resources, stage_cls.NAME, cfg.pools)
    size = resources.concurrency or pool_size
    in_flight = cfg.pools.blocks_in_flight_per_actor
    low, high = size if isinstance(size, tuple) else (size, size)
    compute = ray.data.ActorPoolStrategy(
        min_size=low, max_size=high, max_tasks_in_flight_per_actor=in_flight
    )
    return ds.map_batches(
        stage_cls,
        fn_constructor_args=(cfg, *args),
        batch_size=resources.batch_size,
        batch_format="numpy",
        num_cpus=resources.num_cpus,
        num_gpus=resources.num_gpus or None,
        compute=compute,
    )
