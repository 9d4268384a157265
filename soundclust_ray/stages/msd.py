"""CPU stage: one MSD HDF5 file per track → seed 004's statistics per analysis field + metadata.

Reads ``track_id, path``; writes ``track_id``, every ``msd_<field>__<stat>`` column (float32),
``artist``, ``title`` and ``year`` (strings; the year "" when unknown) and the error fields.
Metadata stays text in the shards so that the driver's matrix, which takes every numeric
column, holds only the statistics; :func:`add_msd_metadata_to_manifest` gives the manifest a
float ``year``.
A plain callable class: there is no model to load, so the pipeline may run it as tasks or actors.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import numpy as np
import pyarrow.parquet as pq

from soundclust_ray.config import RunConfig
from soundclust_ray.sources.msd import (
    MANIFEST_CHUNK_ROWS,
    META_COLUMNS,
    msd_columns,
    msd_track_row,
)
from soundclust_ray.stages.base import Resources, map_tracks

STAGE_NAME = "msd"
META = list(META_COLUMNS)


def msd_resources(cfg: RunConfig) -> Resources:
    """One CPU per worker; files take milliseconds, so batches are larger than audio batches."""
    return Resources(num_cpus=1.0, batch_size=cfg.msd.batch_size)


class MsdStage:
    """Statistics of the configured MSD analysis fields for a batch of files."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg.msd
        self.columns = msd_columns(cfg.msd)
        self.fill: dict[str, object] = dict.fromkeys(self.columns, float("nan"))
        self.fill.update(artist="", title="", year="")

    def compute_track(self, track_id: str, path: str) -> list[dict[str, object]]:
        """One output row; raises MsdTrackError for a non-MSD file or a missing field."""
        return [msd_track_row(path, self.cfg)]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return map_tracks(batch, self.compute_track, STAGE_NAME, self.fill)


def msd_manifest(input_path: str, out: str, limit: int | None = None) -> tuple[str, int]:
    """Write ``OUT/manifest.parquet`` for an MSD folder (streamed listing) or manifest file.

    Returns (manifest path, rows). A manifest file goes through the audio manifest reader, so its
    rows need a ``path`` column and may carry metadata; rows it flags invalid are dropped here
    with a count in the progress line of the caller.
    """
    import pyarrow as pa

    from soundclust_ray import shards
    from soundclust_ray.sources.msd import write_msd_manifest

    fs, base = shards.resolve(out)
    target = shards.join(base, "manifest.parquet")
    if os.path.isdir(input_path):
        n = write_msd_manifest(input_path, target)
        if limit is not None and limit < n:
            table = pq.read_table(target, filesystem=fs).slice(0, limit)
            shards.write_table_atomic(fs, target, table)
            n = limit
        return target, n
    from soundclust_ray.manifest import build_manifest

    frame = build_manifest(input_path, limit=limit)
    frame = frame[frame["invalid_reason"] == ""].drop(columns=["invalid_reason"])
    shards.write_table_atomic(fs, target, pa.Table.from_pandas(frame, preserve_index=False))
    return target, len(frame)


def run_msd_pipeline(
    manifest_path: str,
    out: str,
    cfg: RunConfig,
    progress: Callable[[str], None] = print,
    chunk_rows: int = MANIFEST_CHUNK_ROWS,
) -> dict:
    """Stream the manifest, ``chunk_rows`` rows at a time, through MsdStage into feature shards.

    Uses the pipeline's shard writer, resume and error table, so the outputs have the layout of an
    audio run: ``OUT/features`` (statistics + artist/title/year), ``OUT/errors.parquet``,
    ``OUT/run.json``. Driver memory holds one manifest chunk plus the ids already done.
    """
    from soundclust_ray import pipeline as pl
    from soundclust_ray import shards

    product = pl.FEATURES
    cfg = dataclasses.replace(cfg, source="msd", shard_rows=max(cfg.shard_rows, cfg.msd.shard_rows))
    resources = msd_resources(cfg)

    def build(ds):
        pool = max(1, int(pl.cluster_cpus() / resources.num_cpus))
        return pl.map_stage(ds, MsdStage, cfg, resources, pool)

    fs, _ = shards.resolve(manifest_path)
    done = set(shards.read_column(out, product).to_pylist())
    total = pl.ProductResult(product=product)
    n_rows = 0
    with fs.open_input_file(manifest_path) as f:
        for batch in pq.ParquetFile(f).iter_batches(chunk_rows, columns=["track_id", "path"]):
            chunk = batch.to_pandas()
            n_rows += len(chunk)
            todo = chunk[~chunk["track_id"].isin(done)]
            result = pl.run_product(product, todo, out, cfg, build, progress)
            total.n_todo += result.n_todo
            total.n_skipped += len(chunk) - len(todo)
            total.n_ok += result.n_ok
            total.n_failed += result.n_failed
            total.seconds += result.seconds
            total.nodes.update(result.nodes)
    manifest = pq.read_table(manifest_path, filesystem=fs, columns=["track_id", "path"]).to_pandas()
    manifest["invalid_reason"] = ""
    return pl.finish_run(out, manifest, cfg, [total], {product: total.seconds}, manifest_path)


def add_msd_metadata_to_manifest(out: str) -> int:
    """Copy artist/title/year from the feature shards into ``OUT/manifest.parquet``.

    The manifest of a folder only knows paths; the metadata is read by the stage, and search and
    cluster tables join on the manifest. Returns the number of tracks that got metadata.
    """
    import pandas as pd
    import pyarrow as pa

    from soundclust_ray import shards

    fs, base = shards.resolve(out)
    parts = [t.to_pandas() for t in shards.iter_shard_tables(out, "features", ["track_id", *META])]
    if not parts:
        return 0
    meta = pd.concat(parts, ignore_index=True).drop_duplicates("track_id")
    meta["year"] = pd.to_numeric(meta["year"].astype(str), errors="coerce").astype("float32")
    path = shards.join(base, "manifest.parquet")
    manifest = pq.read_table(path, filesystem=fs).to_pandas()
    manifest = manifest.drop(columns=[c for c in META if c in manifest.columns])
    manifest = manifest.merge(meta, on="track_id", how="left")
    shards.write_table_atomic(fs, path, pa.Table.from_pandas(manifest, preserve_index=False))
    return len(meta)
