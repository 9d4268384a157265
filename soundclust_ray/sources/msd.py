"""Million Song Dataset HDF5 files: seed 004's statistics per field, then per-field OOF k-means.

The pure readers are in ``sources/msd_h5.py``, the Ray stage in ``stages/msd.py``; this module
lists the files as a manifest in OUT, streams it through the stage in chunks, and runs the
per-field out-of-fold tables after the products.
"""

from __future__ import annotations

import dataclasses
import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from soundclust_ray import outdir, shards
from soundclust_ray.config import RunConfig
from soundclust_ray.errors import UserError
from soundclust_ray.sources.base import Listing, RunOptions, Say
from soundclust_ray.sources.msd_h5 import MANIFEST_CHUNK_ROWS, META_COLUMNS, write_msd_manifest

META = list(META_COLUMNS)


def msd_manifest(input_path: str, out: str, limit: int | None = None) -> tuple[str, int]:
    """Write ``OUT/manifest.parquet`` for an MSD folder (streamed listing) or manifest file.

    Returns (manifest path, rows). A manifest file goes through the audio manifest reader, so its
    rows need a ``path`` column and may carry metadata; rows it flags invalid are dropped.
    """
    fs, _ = outdir.resolve(out)
    target = outdir.path(out, outdir.MANIFEST)
    if os.path.isdir(input_path):
        n = write_msd_manifest(input_path, target)
        if limit is not None and limit < n:
            table = pq.read_table(target, filesystem=fs).slice(0, limit)
            outdir.write_table_atomic(fs, target, table)
            n = limit
        return target, n
    from soundclust_ray.manifest import build_manifest

    frame = build_manifest(input_path, limit=limit)
    frame = frame[frame["invalid_reason"] == ""].drop(columns=["invalid_reason"])
    outdir.write_table_atomic(fs, target, pa.Table.from_pandas(frame, preserve_index=False))
    return target, len(frame)


def run_msd_pipeline(
    manifest_path: str,
    out: str,
    cfg: RunConfig,
    progress: Say = print,
    chunk_rows: int = MANIFEST_CHUNK_ROWS,
) -> dict:
    """Stream the manifest, ``chunk_rows`` rows at a time, through MsdStage into feature shards.

    Uses the pipeline's shard writer, resume and error table, so the outputs have the layout of an
    audio run: ``OUT/features`` (statistics + artist/title/year), ``OUT/errors.parquet``,
    ``OUT/run.json``. Driver memory holds one manifest chunk plus the ids already done.
    """
    from soundclust_ray import pipeline, runinfo
    from soundclust_ray.stages.msd import MsdStage
    from soundclust_ray.stages.pools import cpu_pool, map_stage

    product = outdir.FEATURES
    cfg = dataclasses.replace(cfg, source="msd", shard_rows=max(cfg.shard_rows, cfg.msd.shard_rows))
    resources = MsdStage.resources(cfg)

    def build(ds):
        return map_stage(ds, MsdStage, cfg, resources, cpu_pool(resources))

    fs, _ = outdir.resolve(manifest_path)
    done = set(shards.read_column(out, product).to_pylist())
    total = runinfo.ProductResult(product=product)
    with fs.open_input_file(manifest_path) as f:
        for batch in pq.ParquetFile(f).iter_batches(chunk_rows, columns=["track_id", "path"]):
            chunk = batch.to_pandas()
            todo = chunk[~chunk["track_id"].isin(done)]
            result = pipeline.run_product(product, todo, out, cfg, build, MsdStage.WRITES, progress)
            total.add(result, skipped=len(chunk) - len(todo))
    manifest = pq.read_table(manifest_path, filesystem=fs, columns=["track_id", "path"]).to_pandas()
    manifest["invalid_reason"] = ""
    return runinfo.finish_run(out, manifest, cfg, [total], {product: total.seconds}, manifest_path)


def add_msd_metadata_to_manifest(out: str) -> int:
    """Copy artist/title/year from the feature shards into ``OUT/manifest.parquet``.

    The manifest of a folder only knows paths; the metadata is read by the stage, and search and
    cluster tables join on the manifest. Returns the number of tracks that got metadata.
    """
    tables = shards.iter_shard_tables(out, outdir.FEATURES, ["track_id", *META])
    parts = [t.to_pandas() for t in tables]
    if not parts:
        return 0
    meta = pd.concat(parts, ignore_index=True).drop_duplicates("track_id")
    meta["year"] = pd.to_numeric(meta["year"].astype(str), errors="coerce").astype("float32")
    manifest = outdir.read_table(out, outdir.MANIFEST).to_pandas()
    manifest = manifest.drop(columns=[c for c in META if c in manifest.columns])
    manifest = manifest.merge(meta, on="track_id", how="left")
    outdir.write_table(out, outdir.MANIFEST, pa.Table.from_pandas(manifest, preserve_index=False))
    return len(meta)


class MsdSource:
    """A folder (or manifest) of per-track MSD HDF5 files."""

    name = "msd"
    needs_ray = True

    def list_inputs(self, opts: RunOptions, cfg: RunConfig, say: Say) -> Listing:
        if not os.path.exists(opts.input_path) and "://" not in opts.input_path:
            raise UserError(f"input not found: {opts.input_path}")
        try:
            path, n = msd_manifest(opts.input_path, opts.out, opts.limit)
        except ValueError as exc:
            raise UserError(str(exc)) from exc
        say(f"{n} MSD files in {opts.input_path}")
        return Listing(n_rows=n, path=path)

    def products(self, cfg: RunConfig) -> list[str]:
        return [outdir.FEATURES]

    def pending(self, listing: Listing, opts: RunOptions, cfg: RunConfig) -> int | None:
        """Not known before computing (the listing streams through the pipeline)."""
        return None

    def stage_modules(self, cfg: RunConfig) -> tuple[str, ...]:
        return ("soundclust_ray.stages.msd",)

    def compute(self, listing: Listing, opts: RunOptions, cfg: RunConfig, say: Say) -> dict:
        return run_msd_pipeline(listing.path, opts.out, cfg, progress=say)

    def post_steps(self, opts: RunOptions, cfg: RunConfig, info: dict, say: Say) -> None:
        """Metadata into the manifest; seed 004's OOF table per field when tracks were written."""
        from soundclust_ray.sources.msd_post import run_msd_field_oof

        add_msd_metadata_to_manifest(opts.out)
        written = info["products"][outdir.FEATURES]["written"]
        oof = run_msd_field_oof(opts.out, cfg) if written else []
        folder = outdir.join(opts.out, outdir.OOF_DIR)
        say(f"out-of-fold k-means: {len(oof)} fields written to {folder}/")


SOURCE = MsdSource()
